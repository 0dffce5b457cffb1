"""Photos: loading them safely, checking them (blur, duplicates, faces), photo sets, and training crops.
"""
