"""`ContinualModel`: a frozen base plus per-task modules, one interface for every method.

- LoRA adapters are PEFT adapters on the base, one per task, keyed by task name and
  switched with `set_adapter` (arXiv 2106.09685). They never touch the inserted blocks,
  which live outside the base's module tree (see `codecl.model.blocks`).
- Inserted blocks sit in an `nn.ModuleDict` keyed by task (or `shared`), and one
  `BlockSlot` hook runs whichever block the active task owns.

Storage per task folder: `adapter_config.json` + `adapter_model.safetensors` (plain PEFT,
loadable by `PeftModel.from_pretrained(base, folder)`), `block.safetensors` + `block.json`,
`module.json` (provenance), and `manifest.json` written last. Never a copy of the base.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from codecl.errors import CheckpointError
from codecl.fileio import atomic_write, write_json
from codecl.data.batching import EncodedPairs
from codecl.methods.mixing import Stage, concat_pairs
from codecl.methods.learner import ContinualLearner
from codecl.registry import MethodSpec
from codecl.model.base import BaseInfo
from codecl.model.causal_blocks import make_block, make_slot

SHARED = "shared"


class ContinualModel(ContinualLearner):
    def __init__(self, base: nn.Module, method: str | MethodSpec, method_cfg, base_info: BaseInfo):
        super().__init__(base, method, method_cfg, base_info)
        self.blocks = nn.ModuleDict()
        block_cfg = method_cfg.block
        # T5: a block in the encoder or decoder stack; a decoder-only LM: a decoder layer (codecl.model.causal_blocks).
        self.slot = make_slot(base, block_cfg) if self.spec.block else None

    # ------------------------------------------------------------------ structure
    def block_key(self, task: str) -> str | None:
        if self.spec.block is None:
            return None
        return SHARED if self.spec.block == "shared" else task

    def _lora_config(self):
        return lora_config(self.method_cfg, self.base_info, self.base)

    def _add_adapter(self, task: str, config) -> None:
        from peft import get_peft_model

        if self.peft is None:
            self.base.name_or_path = self.base.config._name_or_path = self.base_info.path  # PEFT's base_model_name_or_path
            self.peft = get_peft_model(self.base, config, adapter_name=task)
        else:
            self.peft.add_adapter(task, config)

    def add_task(self, task: str) -> None:
        """Create the task's new modules (a shared block is created once, by the first task)."""
        if task in self.tasks:
            raise ValueError(f"task {task!r} already added")
        if self.spec.lora:
            self._add_adapter(task, self._lora_config())
        key = self.block_key(task)
        if key is not None and key not in self.blocks:
            c = self.method_cfg.block
            device = next(self.base.parameters()).device
            # Every block takes the same decoder cache slot: only one is active at a time.
            self.blocks[key] = make_block(self.base, c).to(device)
        self.tasks.append(task)

    def activate(self, task: str | None) -> None:
        """Put `task`'s modules in place and the others out; None = the bare base."""
        if task is not None and task not in self.tasks:
            raise ValueError(f"task {task!r} has no modules; added tasks: {self.tasks}")
        self.active = task
        if self.peft is not None:
            if task is None or not self.spec.lora:
                self.peft.base_model.disable_adapter_layers()
            else:
                self.peft.base_model.enable_adapter_layers()
                self.peft.set_adapter(task)
        if self.slot is not None:
            key = self.block_key(task) if task is not None else None
            self.slot.block = self.blocks[key] if key is not None else None
        for p in self.parameters():
            p.requires_grad_(False)
        for _, p in self.task_parameters(task):
            p.requires_grad_(True)

    # ------------------------------------------------------------------ parameters
    def task_parameters(self, task: str | None) -> list[tuple[str, nn.Parameter]]:
        """The parameters that belong to `task` (its adapter and its/the shared block)."""
        if task is None:
            return []
        params = []
        if self.spec.lora and self.peft is not None:
            marker = f".{task}."
            params += [(n, p) for n, p in self.peft.named_parameters() if "lora_" in n and marker in n + "."]
        key = self.block_key(task)
        if key is not None and not self._shared_block_frozen(task):
            params += [(f"blocks.{key}.{n}", p) for n, p in self.blocks[key].named_parameters()]
        return params

    def _shared_block_frozen(self, task: str) -> bool:
        """method.block.shared_after_first=freeze: the shared block belongs to the first task only
        (trained in its stage, frozen after); every task still runs it."""
        frozen = getattr(self.method_cfg.block, "shared_after_first", "train") == "freeze"
        return frozen and self.block_key(task) == SHARED and bool(self.tasks) and task != self.tasks[0]

    def stored_parameter_count(self) -> int:
        """Every parameter kept beside the frozen base: all adapters and blocks, shared ones once."""
        seen, total = set(), 0
        for task in self.tasks:
            for _, p in self.task_parameters(task):
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
        return total

    # ------------------------------------------------------------------ training hooks (see codecl.methods.build)
    def stages(self, tasks: list[str]) -> list[Stage]:
        """One stage per task, in order."""
        return [Stage(t, (t,)) for t in tasks]

    def training_data(self, stage: Stage, data: dict[str, EncodedPairs], seed: int) -> EncodedPairs:
        """The stage's own task data."""
        return concat_pairs([data[t] for t in stage.tasks])

    def regularizer(self):
        """No extra loss term."""
        return None

    def end_stage(self, stage: Stage, data: dict[str, EncodedPairs], pad_id: int, device, seed: int, batch_size: int) -> None:
        """Nothing to consolidate."""

    # ------------------------------------------------------------------ storage
    def save_task(self, task: str, folder: str | Path, extra: dict | None = None) -> Path:
        """Write the task's modules to `folder` (atomic files, manifest last)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.spec.lora:
            save_adapter(self.peft, task, folder)
        key = self.block_key(task)
        if key is not None:
            block_cfg = self.method_cfg.block
            state = {k: v.detach().cpu().contiguous() for k, v in self.blocks[key].state_dict().items()}
            atomic_write(folder / "block.safetensors", lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
            write_json(folder / "block.json", {"key": key, "stack": self.slot.stack, "position": block_cfg.position,
                                               "init": block_cfg.init, "parameters": sum(v.numel() for v in state.values())})
        return self._write_provenance(folder, task, extra)

    def load_stages(self, seed_dir: str | Path, stages: list[str]) -> None:
        """Load a finished run's modules, every stage's folder under `seed_dir` in training order
        (each holds only its task's modules; a shared block ends as the last stage saved it)."""
        for stage in stages:
            self.load_task(stage, Path(seed_dir) / stage)

    def load_task(self, task: str, folder: str | Path, saved_by: str | None = None) -> None:
        """Load a task's modules saved by `save_task` (adds the task if needed). `saved_by` names
        another method whose modules fit this one's (`MethodSpec.first_stage_as`)."""
        folder = Path(folder)
        self._check_provenance(folder, saved_by)
        if task not in self.tasks:
            self.add_task(task)
        if self.spec.lora:
            load_adapter(self.peft, task, folder)
        key = self.block_key(task)
        if key is not None:
            state = _load_safetensors(folder / "block.safetensors")
            try:
                self.blocks[key].load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise CheckpointError(f"{folder / 'block.safetensors'}: does not fit the block ({str(exc).splitlines()[0]})") from exc


def lora_config(method_cfg, base_info: BaseInfo, model: nn.Module):
    """The PEFT LoraConfig of `method.lora` (recording the base's path) for `model`, the base the adapter
    goes on: its kind (T5 seq2seq or causal LM), its family's default targets when `target_modules` is
    empty (`codecl.model.causal.default_lora_targets`; GPT-2's Conv1D layers get fan_in_fan_out), and a
    `match_block` rank resolved against it (`codecl.methods.rank`)."""
    from peft import LoraConfig, TaskType

    from codecl.errors import ConfigError
    from codecl.methods.rank import resolve_lora_rank
    from codecl.model.causal import default_lora_targets, is_causal, linear_modules, resolve_lora_targets, uses_conv1d

    c = method_cfg.lora
    targets = resolve_lora_targets(c.target_modules, model)
    if not linear_modules(model, targets):
        raise ConfigError(f"method.lora.target_modules={list(targets)}: no linear layer of {type(model).__name__} has such a name; "
                          f"its family's default is {list(default_lora_targets(model))} (method.lora.target_modules=[] picks it)")
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM if is_causal(model) else TaskType.SEQ_2_SEQ_LM, r=resolve_lora_rank(c, method_cfg.block, model),
        lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=list(targets), fan_in_fan_out=uses_conv1d(model, targets),
        base_model_name_or_path=base_info.path,
    )


def save_adapter(peft_model, adapter: str, folder: Path) -> None:
    """One adapter of a PeftModel as a plain PEFT folder (`PeftModel.from_pretrained` loads it)."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(peft_model, adapter_name=adapter, save_embedding_layers=False)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write(folder / "adapter_model.safetensors", lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    write_json(folder / "adapter_config.json", _jsonable(peft_model.peft_config[adapter].to_dict()))


def load_adapter(peft_model, adapter: str, folder: Path) -> None:
    """Load a PEFT folder's weights into the existing adapter `adapter`; a missing weight is an error."""
    from peft.utils import set_peft_model_state_dict

    state = _load_safetensors(folder / "adapter_model.safetensors")
    result = set_peft_model_state_dict(peft_model, state, adapter_name=adapter)
    missing = [k for k in result.missing_keys if "lora_" in k and f".{adapter}." in k]
    if missing:
        raise CheckpointError(f"{folder / 'adapter_model.safetensors'}: missing adapter weights, e.g. {missing[0]}")


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in sorted(obj) if v is not None] if isinstance(obj, set) else [_jsonable(v) for v in obj]
    if hasattr(obj, "value") and not isinstance(obj, (str, int, float, bool)):
        return obj.value
    return obj
