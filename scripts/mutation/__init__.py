"""Mutation testing of the method's pure core with mutmut (`make mutation`).

`stage` lays the checkout out as mutmut needs it, `run` mutates one core module at a time
and records its results, `report` writes docs/mutation.md from them.
"""
