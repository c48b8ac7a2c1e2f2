"""Where featurize (100k) and the ranked-batch query (1M) spend their time.

Repeats the steps of al_tasks.featurize.featurize and al_tasks.query.query one by one with
a timer, then a variant of featurize that tokenizes and hashes once (cached TF) and checks
it writes the same features. Needs the corpora and the 1M feature store of a throughput
run in the workdir. ``python -m bench.profile_steps [n_docs]``.
"""
import glob, shutil, sys, time
from pathlib import Path
import numpy as np
from al_tasks.config import LoopConfig, PRODUCT_GROUPS
from al_tasks.corpus import read_corpus
from al_tasks.featurize import FeatureSet, build_pipeline, fingerprint, load_features
from al_tasks.model import TextClassifier
from al_tasks.query import MarginSampling, UncertaintySampling, score_pool_top_k, ranked_batch
from bench.common import DEFAULT_WORKDIR, bench_spark, quiet_warnings
T = time.perf_counter
if __name__ == "__main__":
    quiet_warnings()
    cfg = LoopConfig(workspace=str(DEFAULT_WORKDIR / "profile"), spark_master="local[2]")
    spark = bench_spark(cfg)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    corpus = DEFAULT_WORKDIR / "throughput" / f"corpus-{n}.parquet"
    root = DEFAULT_WORKDIR / "profile" / "f"; shutil.rmtree(root, ignore_errors=True); root.mkdir(parents=True)
    steps = {}
    t = T(); fingerprint(corpus, cfg); steps["fingerprint (sha256 of corpus)"] = T() - t
    t = T(); c = read_corpus(corpus, cfg, with_labels=False); steps["read_corpus (pandas)"] = T() - t
    t = T(); docs = spark.createDataFrame(c.docs[["id", "text"]]).repartition(4); steps["createDataFrame"] = T() - t
    t = T(); model = build_pipeline(cfg).fit(docs); steps["pipeline fit (IDF pass)"] = T() - t
    t = T(); model.write().overwrite().save(str(root / "pipeline")); steps["save pipeline"] = T() - t
    t = T(); model.transform(docs).select("id", "features").write.mode("overwrite").parquet(str(root / "features.parquet")); steps["transform + write features"] = T() - t
    t = T(); c.docs[["id", "text"]].to_parquet(root / "docs.parquet", index=False); steps["write docs.parquet (pandas)"] = T() - t
    total = sum(steps.values())
    for k, v in steps.items(): print(f"featurize {n}: {k:<32} {v:6.1f}s {100 * v / total:4.0f}%", flush=True)
    print(f"featurize {n}: total {total:.1f}s = {n / total:,.0f} docs/s", flush=True)
    # Variant: tokenize + hash once, cache, fit IDF on the cache, transform from the cache.
    from pyspark import StorageLevel
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import IDF
    stages = build_pipeline(cfg).getStages()
    root2 = DEFAULT_WORKDIR / "profile" / "g"; shutil.rmtree(root2, ignore_errors=True); root2.mkdir(parents=True)
    t = T()
    docs2 = spark.createDataFrame(c.docs[["id", "text"]]).repartition(4)
    front = PipelineModel(stages=stages[:3])  # tokenizer, stop words, hashing: no fitting needed
    tf = front.transform(docs2).select("id", "tf").persist(StorageLevel.MEMORY_AND_DISK)
    idf_model = stages[3].fit(tf)
    full = PipelineModel(stages=stages[:3] + [idf_model, stages[4]])
    full.write().overwrite().save(str(root2 / "pipeline"))
    PipelineModel(stages=[idf_model, stages[4]]).transform(tf).select("id", "features").write.mode("overwrite").parquet(str(root2 / "features.parquet"))
    tf.unpersist()
    v = T() - t
    base_spark = steps["createDataFrame"] + steps["pipeline fit (IDF pass)"] + steps["save pipeline"] + steps["transform + write features"]
    print(f"featurize {n}: Spark part as shipped {base_spark:.1f}s; with cached TF (one tokenize pass) {v:.1f}s", flush=True)
    import pyarrow.dataset as ds
    a = ds.dataset(str(root / "features.parquet")).to_table().sort_by("id"); b = ds.dataset(str(root2 / "features.parquet")).to_table().sort_by("id")
    print(f"featurize {n}: cached variant writes identical features: {a.equals(b)}", flush=True)
    # Query breakdown on the 1M pool the throughput run featurized.
    roots = glob.glob(str(DEFAULT_WORKDIR / "throughput" / "workspace" / "throughput-1000000" / "features" / "*" / "_SUCCESS"))
    if roots:
        fs = FeatureSet.load(Path(roots[0]).parent)
        t = T(); ids = fs.ids(); print(f"query 1M: feature_set.ids() {T() - t:.1f}s", flush=True)
        lab = np.sort(np.random.default_rng(0).choice(ids, 1230, replace=False))
        _, X_lab = load_features(fs, lab)
        clf = TextClassifier(classes=PRODUCT_GROUPS).fit(X_lab, np.resize(np.asarray(PRODUCT_GROUPS, dtype=object), 1230))
        t = T(); np.isin(ids, lab).sum(); print(f"query 1M: pool size (isin) {T() - t:.1f}s", flush=True)
        for k in (100, 5000):
            t = T(); top = score_pool_top_k(fs, clf, UncertaintySampling(), k, lab, spark); print(f"query 1M: score_pool_top_k k={k} {T() - t:.1f}s", flush=True)
        t = T(); _, Xc = load_features(fs, top["id"].to_numpy()); print(f"query 1M: load_features(5000 candidates) {T() - t:.1f}s", flush=True)
        t = T(); _, Xl = load_features(fs, lab); print(f"query 1M: load_features(1230 labelled) {T() - t:.1f}s", flush=True)
        t = T(); ranked_batch(top["score"].to_numpy(), Xc, Xl, 500); print(f"query 1M: ranked_batch(500 of 5000) {T() - t:.1f}s", flush=True)
