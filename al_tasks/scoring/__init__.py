"""Scoring new complaints with the champion model: a daily batch DAG and a streaming scorer.

* :mod:`~al_tasks.scoring.daily` -- one day's landing files: stage, score, flag, pool;
* :mod:`~al_tasks.scoring.stream` -- Spark Structured Streaming over a folder of new files.
"""
