"""What runs inside a stage process."""
