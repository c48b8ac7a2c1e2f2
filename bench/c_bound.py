"""Side experiment: does tune's search bound C <= e^1 (LoopConfig.log_c_high = 1) cap accuracy?

Same splits as the label-efficiency benchmark (seeds 0-4, first 2,000 of the seed's
permutation held out), 1,230 random labels (the next 1,230), tune with 24 trials, once with
the default log_c_high = 1.0 and once with 4.0. Needs the features of a label-efficiency
run in the workdir. ``python -m bench.c_bound``; output in bench/results/c_bound.txt.
"""
import glob, time, warnings
import numpy as np
from al_tasks.config import LoopConfig
from al_tasks.featurize import FeatureSet, load_features
from al_tasks.corpus import read_corpus, binary_labels
from al_tasks.tune import tune
from al_tasks.evaluate import evaluate
from bench.common import DEFAULT_WORKDIR
warnings.filterwarnings("ignore")
if __name__ == "__main__":
    fs = FeatureSet.load(glob.glob(str(DEFAULT_WORKDIR / "workspace" / "label-efficiency" / "features" / "*"))[0])
    ids, X = load_features(fs)
    base = LoopConfig()
    y_all = read_corpus(base.corpus_path, base).docs.set_index("id")["label"].loc[ids].to_numpy(dtype=object)
    for task, pos in (("product_group", ""), ("debt_collection", "debt_collection")):
        y = binary_labels(y_all, pos) if pos else y_all
        for high in (1.0, 4.0):
            accs, f1s, cs = [], [], []
            t = time.time()
            for seed in range(5):
                perm = np.random.default_rng(seed).permutation(len(ids))
                ev, lab = perm[:2000], perm[2000:3230]
                cfg = LoopConfig(positive_class=pos, seed=seed, log_c_high=high)
                r = tune(X[lab], y[lab], cfg, max_evals=24, log=lambda *a: None)
                m = evaluate(r.model, X[ev], y[ev], cfg.classes)
                accs.append(m["accuracy"]); f1s.append(m["macro_f1"]); cs.append(r.best_params["C"])
            print(f"{task} log_c_high={high}: accuracy {np.mean(accs):.3f} ± {np.std(accs, ddof=1):.3f}, macro-F1 {np.mean(f1s):.3f} ± {np.std(f1s, ddof=1):.3f}, best C {np.round(cs, 2).tolist()} ({time.time()-t:.0f}s)", flush=True)
