"""The bottom layer every other package may import: one-line errors, atomic writes, names and
workspace paths."""
