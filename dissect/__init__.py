"""Network Dissection: score every unit of a PyTorch layer against a Broden store."""
__version__ = "0.1.0"
