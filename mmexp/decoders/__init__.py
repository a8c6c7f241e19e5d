"""Text decoders for generation objectives: the contract, built-in and Hugging Face decoders."""
