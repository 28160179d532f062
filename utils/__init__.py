"""Small helpers shared by the toolkit (TensorFlow environment, seeding, files)."""
