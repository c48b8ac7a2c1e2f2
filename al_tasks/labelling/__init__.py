"""The human side of the loop: query sets out, labelled files in, the label store.

* :mod:`~al_tasks.labelling.export` -- the query-set CSV a labeller opens, and its manifest;
* :mod:`~al_tasks.labelling.ingest` -- a returned file checked row by row (parse, check,
  duplicates, assemble);
* :mod:`~al_tasks.labelling.store` -- the append-only, idempotent label store and the
  fixed evaluation set;
* :mod:`~al_tasks.labelling.rejects` -- the log of refused rows;
* :mod:`~al_tasks.labelling.inbox` -- file names in the bucket and a round's ingest;
* :mod:`~al_tasks.labelling.ids` -- how ids are compared.
"""
