"""The detachment model: mechanics, disconnection, capacity fade and fitting."""
