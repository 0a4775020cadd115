"""Small CNN digit classifier trained on synthetic digit-like images."""
