"""Local tooling: the `segments` command line, the generator, the local servers, the demo.

Never imported by `pipelines`, `transforms` or `models`, and left out of the worker image.
"""
