"""The run-folder schema, shared by `submission` (which writes run folders) and `leaderboard` (which
reads them): column tuples, the cell key, the anomaly kinds, every path of a run folder, and the
checked reader of results.csv. Imports neither package, so the two never import each other.
"""
