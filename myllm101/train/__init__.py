"""Training: the fast-path trainer, its config, LR schedules, checkpoints, metrics and plots.

from myllm101.train import TrainConfig, Trainer
summary = Trainer(TrainConfig.from_file("configs/gpt-shakespeare.json")).fit()
"""

from myllm101.train.config import TrainConfig
from myllm101.train.trainer import Trainer

__all__ = ["TrainConfig", "Trainer"]
