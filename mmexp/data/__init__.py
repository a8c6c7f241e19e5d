"""Data: manifest reading, data modules and the embedded ``shapes`` data set."""
