"""verl-audio: RL post-training for audio-language models, as a verl plugin."""
from setuptools import find_packages, setup

setup(
    name="verl-audio",
    version="0.1.0",
    description="Reinforcement-learning post-training for audio-language models (a verl plugin)",
    packages=find_packages(include=["verl_audio", "verl_audio.*", "reward_fns", "reward_fns.*"]),
    package_data={"verl_audio": ["data/demo_sample/**/*", "trainer/config/*.yaml"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=[
        "verl==0.9.1",
        "transformers>=5.9,<5.11",
        "torch>=2.9",
        "librosa>=0.10",
        "soundfile>=0.12",
        "soxr>=0.3",
        "scipy>=1.10",
        "cachetools",
        "ray>=2.40",
        "matplotlib>=3.7",
        "tensorboard>=2.14",
        "huggingface_hub",
        "omegaconf>=2.3",
        "tqdm>=4.60",
        "pyarrow>=14",
        "pandas>=2.0",
        "jiwer>=3.0",
        "webrtcvad-wheels>=2.0.14",
        # verl imports these in its workers but does not declare them
        "uvicorn",
        "fastapi",
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6.100"],
        "gpu": ["vllm==0.24.0", "flash-attn"],
    },
    entry_points={"verl.plugins": ["verl_audio = verl_audio.plugin"]},
)
