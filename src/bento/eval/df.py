"""Deep Fingerprinting (Sirinam et al., CCS 2018), in PyTorch, and Tik-Tok's timing variant.

The architecture is the published one: four blocks of two 1-D convolutions (32, 64, 128
and 256 filters, kernel 8, batch normalisation; ELU in the first block, ReLU after), each
block closed by max pooling (8, stride 4) and dropout 0.1; then two dense layers of 512
(batch normalisation, ReLU, dropout 0.7 and 0.5) and a softmax over the sites. Adamax with
learning rate 0.002, batches of 128. Input: the first 5000 cells, +1/-1 (DF), or direction
times arrival time (Tik-Tok, Rahman et al., PETS 2020). The epoch kept is the one with the
best validation accuracy: validation traces are never test traces (see ``splits``). The
published 30 epochs are DF's with 800 visits a site; with ten, 30 epochs can stop while
validation accuracy still climbs, so ``patience`` trains on past them until it stops
improving (up to ``MAX_EPOCHS``): DF trained to convergence, not cut short by a schedule
made for a hundred times the data.

Runs on the CPU; uses a GPU where PyTorch finds one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from bento.eval.traces import DF_LENGTH, Trace

Encode = Callable[[Trace], npt.NDArray[Any]]
MAX_EPOCHS = 300  # patience's ceiling: a validation score that keeps inching up still ends


def encoder(kind: str, length: int = DF_LENGTH) -> Encode:
    if kind == "df":
        return lambda t: t.df_input(length)
    if kind == "tiktok":
        return lambda t: t.timing_input(length)
    raise ValueError(f"unknown input {kind!r}: df or tiktok")


def build(classes: int, length: int = DF_LENGTH) -> Any:
    """The DF network for ``classes`` sites and inputs of ``length`` cells."""
    from torch import nn

    def block(inp: int, out: int, act: type[nn.Module]) -> list[nn.Module]:
        return [  # Keras's "same" padding for kernel 8: 3 before, 4 after
            nn.ConstantPad1d((3, 4), 0.0),
            nn.Conv1d(inp, out, 8),
            nn.BatchNorm1d(out),
            act(),
            nn.ConstantPad1d((3, 4), 0.0),
            nn.Conv1d(out, out, 8),
            nn.BatchNorm1d(out),
            act(),
            nn.MaxPool1d(8, stride=4, padding=2),
            nn.Dropout(0.1),
        ]

    layers = (
        block(1, 32, nn.ELU) + block(32, 64, nn.ReLU) + block(64, 128, nn.ReLU) + block(128, 256, nn.ReLU)
    )
    features = nn.Sequential(*layers)
    import torch

    with torch.no_grad():
        flat = int(features(torch.zeros(1, 1, length)).numel())
    return nn.Sequential(
        features,
        nn.Flatten(),
        nn.Linear(flat, 512),
        nn.BatchNorm1d(512),
        nn.ReLU(),
        nn.Dropout(0.7),
        nn.Linear(512, 512),
        nn.BatchNorm1d(512),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(512, classes),
    )


def accuracy(
    train: Sequence[Trace],
    valid: Sequence[Trace],
    test: Sequence[Trace],
    *,
    kind: str = "df",
    length: int = DF_LENGTH,
    epochs: int = 30,
    patience: int = 0,
    batch: int = 128,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, float]:
    """Train on ``train``, keep the best epoch on ``valid``, and measure it on ``test``.

    ``epochs`` are always trained; with ``patience`` > 0, training goes on after them while
    the best validation score is at most ``patience`` epochs old (up to ``MAX_EPOCHS``)."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encode = encoder(kind, length)
    sites = sorted({t.site for t in train})
    index = {site: i for i, site in enumerate(sites)}

    def tensors(traces: Sequence[Trace]) -> tuple[Any, Any]:
        x = np.stack([encode(t) for t in traces]).astype(np.float32)[:, None, :]
        y = np.asarray([index.get(t.site, -1) for t in traces], dtype=np.int64)
        return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    x_train, y_train = tensors(train)
    x_valid, y_valid = tensors(valid)
    x_test, y_test = tensors(test)
    model = build(len(sites), length).to(device)
    optimiser = torch.optim.Adamax(model.parameters(), lr=0.002, betas=(0.9, 0.999), eps=1e-8)
    loss = torch.nn.CrossEntropyLoss()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    best, best_state, best_epoch, epoch = -1.0, None, 0, 0
    while epoch < epochs or (epoch - best_epoch < patience and epoch < MAX_EPOCHS):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), batch):
            chosen = order[start : start + batch]
            if len(chosen) < 2:
                continue  # batch normalisation needs two samples
            optimiser.zero_grad()
            loss(model(x_train[chosen]), y_train[chosen]).backward()
            optimiser.step()
        epoch += 1
        score = _score(model, x_valid, y_valid, batch)
        if progress is not None:
            progress(epoch, score)
        if score > best:
            best, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    accuracy = _score(model, x_test, y_test, batch)
    return {"accuracy": accuracy, "valid_accuracy": best, "epoch": best_epoch, "trained": epoch}


def _score(model: Any, x: Any, y: Any, batch: int) -> float:
    import torch

    model.eval()
    right = 0
    with torch.no_grad():
        for start in range(0, len(x), batch):
            guess = model(x[start : start + batch]).argmax(dim=1)
            right += int((guess == y[start : start + batch]).sum())
    return right / max(1, len(x))
