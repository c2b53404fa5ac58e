"""Stream stages (faust agents), one stage per module."""
