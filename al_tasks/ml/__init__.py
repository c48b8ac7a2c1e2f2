"""The machine learning of the loop, plain Python and Spark, no Airflow.

features (text -> sparse TF-IDF, Spark) -> model (logistic regression over the task's
classes) -> tune (hyperopt) -> evaluate (the fixed evaluation set) -> strategies /
query (exact top-k over the pool, Spark) -> flag (escalate / review) -> plot.
"""
