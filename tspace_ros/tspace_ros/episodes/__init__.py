"""Episodes: the driver's episode control and how windows become experience."""
