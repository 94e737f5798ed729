"""Data kinds (ToM stories, knowledge conflicts, word problems, text, contrast pairs): the sets the
project writes itself, a user's records read from files or the hub, and the suite that serves them."""
