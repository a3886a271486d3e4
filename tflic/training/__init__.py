"""Training: the distributed train step (`trainer`), its input pipeline and widening.

`python -m tflic.train` is the script; `python -m tflic.launch` runs several workers.
"""
