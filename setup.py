from setuptools import find_packages, setup

setup(
    name="speechbrain-pom",
    version="0.1.0",
    description="The Polynomial Mixer (PoM) for SpeechBrain encoders",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["speechbrain_pom", "speechbrain_pom.*"]),
    python_requires=">=3.10",
    install_requires=[
        "speechbrain>=1.1.2,<1.2",
        "torch>=2.7.1",
        "torchaudio>=2.7.1",
        "hyperpyyaml>=1.2",
        "sentencepiece>=0.1.99",
        "soundfile>=0.12",
        "espeakng-loader>=0.2.4",
        "scipy>=1.10",
    ],
    extras_require={"bench": ["matplotlib>=3.7"], "test": ["pytest>=7", "ruff"]},
    license="Apache-2.0",
)
