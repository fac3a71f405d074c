"""A fine-tuning run's best state on disk: ``RUN_DIR/best/`` (finetune/run.py describes the run
directory), written by ``BestSaver.save`` whenever the val metric improves and read back by
``restore`` for the test split.

    saver = BestSaver("lora", base="smollm2", task="sft")
    saver.save(model, run_dir / "best")            # atomically: a crash keeps the previous best
    saver.restore(model, run_dir / "best")         # manifest checked first

lora / qlora: the adapter in PEFT's format (finetune/adapters.py) and, for ``classify``, the trained
head (``HEAD_MODULES``) as ``head.safetensors``; full: the whole model as ``load_model`` reads it.
Always ``finetune.json`` (``INFO_FILE``: base, method, task, labels, quantization).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

HEAD_MODULES = ("pooler", "classifier")  # BERT's classification head: trained in full by lora too
HEAD_FILE, INFO_FILE = "head.safetensors", "finetune.json"


def head_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable head's tensors (pooler + classifier) by state_dict name."""
    return {k: t.detach().cpu().contiguous() for k, t in model.state_dict().items()
            if k.split(".")[0] in HEAD_MODULES}  # fmt: skip


@dataclass
class BestSaver:
    """Writes the model's state as RUN_DIR/best/ (module docstring) and reads it back.

    method: "full" | "lora" | "qlora"; base: what the base was ("smollm2", "minilm", a directory);
    model_cfg / tokenizer / extra_files: for ``full`` (the tokenizer saved when it is ours).
    """

    method: str
    base: str | None = None
    task: str = "sft"
    labels: list[str] | None = None
    model_cfg: object = None
    tokenizer: object = None
    extra_files: Sequence[Path] = ()

    def info(self, model: nn.Module) -> dict:
        q = getattr(model, "quantization", None)
        return {"base": self.base, "method": self.method, "task": self.task,
                "labels": self.labels, "quantization": q}  # fmt: skip

    def save(self, model: nn.Module, directory: Path) -> Path:
        """Written atomically (``train.checkpoint.write_dir_atomically``): a crash mid-save
        leaves the previous best intact."""
        from myllm101.finetune.adapters import save_adapter
        from myllm101.train.checkpoint import save_model_files, write_dir_atomically

        def fill(tmp: Path) -> None:
            if self.method == "full":
                save_model_files(tmp, model, self.model_cfg or model.cfg, None, self._our_tok())
                for src in self.extra_files:
                    shutil.copyfile(src, tmp / Path(src).name)
            else:
                save_adapter(model, tmp, base_name=self.base)
                head = head_state(model) if self.task == "classify" else {}
                if head:
                    save_file(head, tmp / HEAD_FILE, metadata={"format": "pt"})
            (tmp / INFO_FILE).write_text(json.dumps(self.info(model), indent=2) + "\n")

        return write_dir_atomically(directory, fill)

    def _our_tok(self):
        from myllm101.fast.bpe import Tokenizer

        return self.tokenizer if isinstance(self.tokenizer, Tokenizer) else None

    def restore(self, model: nn.Module, directory: Path) -> nn.Module:
        """Load the saved best state into ``model`` (the same model, still prepared), after
        checking the directory's manifest."""
        from myllm101.finetune.adapters import CONFIG_NAME, WEIGHTS_NAME, load_adapter
        from myllm101.train.checkpoint import MODEL_FILES, load_weights, verify_checkpoint

        directory = Path(directory)
        if self.method == "full":
            verify_checkpoint(directory, required=MODEL_FILES)
            load_weights(model, directory)
            return model
        verify_checkpoint(directory, required=(CONFIG_NAME, WEIGHTS_NAME))
        load_adapter(model, directory)
        if (directory / HEAD_FILE).is_file():
            missing, unexpected = model.load_state_dict(load_file(directory / HEAD_FILE),
                                                        strict=False)  # fmt: skip
            if unexpected:
                raise ValueError(f"{directory / HEAD_FILE}: unexpected tensors {unexpected}")
        return model
