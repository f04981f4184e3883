"""Generating text from a trained model, one token at a time.

Following the reference notes ("Sampling novel sequences"): start from a zero hidden state, draw
each next token from the softmax of the logits divided by the temperature, feed it back as the
next input, and stop at `<eos>` (word models) or after the requested number of tokens.

The first input is the corpus's boundary token (`<eos>` for word models, a line break for
character models), so that the model starts as it would at the beginning of a line; an optional
prompt ("prime") follows it. A dedicated `torch.Generator` makes the text a function of the seed
alone, independent of any other use of torch's random numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from lmtrain.errors import ConfigError
from lmtrain.model import RNNLanguageModel
from lmtrain.tokenizer import Tokenizer, WordTokenizer, format_tokens


def boundary_token(tokenizer: Tokenizer) -> int | None:
    """The token that separates lines: `<eos>`, or the newline character if the vocabulary has one."""
    if isinstance(tokenizer, WordTokenizer):
        return tokenizer.eos_id
    return tokenizer.index.get("\n")


def check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0):
        raise ConfigError(
            f"--temperature must be a number greater than 0 (got {temperature}); "
            "1.0 samples the model's distribution, smaller values are more conservative"
        )


def check_length(length: int) -> None:
    if length < 1:
        raise ConfigError(f"--length must be at least 1 token (got {length})")


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The ids of a prompt; a ConfigError names any token the vocabulary lacks."""
    unknown = tokenizer.unknown_tokens(prompt)
    if unknown:
        what = "characters" if tokenizer.kind == "char" else "words"
        raise ConfigError(
            f"the prompt has {what} outside the model's vocabulary: {format_tokens(unknown)}; "
            f"rephrase the prompt using {what} from the training text"
        )
    if isinstance(tokenizer, WordTokenizer):
        return tokenizer.encode_words(prompt)
    return tokenizer.encode(prompt)


@torch.no_grad()
def generate(
    model: RNNLanguageModel,
    tokenizer: Tokenizer,
    length: int,
    temperature: float = 1.0,
    prompt_ids: list[int] | None = None,
    seed: int = 0,
    stop_at_eos: bool = True,
) -> Iterator[int]:
    """Yield up to `length` sampled token ids that continue the prompt."""
    check_temperature(temperature)
    device = model.decoder.weight.device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    context = list(prompt_ids or [])
    start = boundary_token(tokenizer)
    if start is not None:
        context.insert(0, start)
    if not context:
        # No boundary token and no prompt: start from a token drawn uniformly at random.
        context = [int(torch.randint(tokenizer.vocab_size, (1,), generator=generator, device=device))]
    inputs = torch.tensor(context, device=device).view(-1, 1)  # [T, B=1]
    logits, state = model(inputs, None)
    logits = logits[-1]  # [1, V]: the distribution of the first new token
    stop_id = tokenizer.eos_id if stop_at_eos and isinstance(tokenizer, WordTokenizer) else None
    for _ in range(length):
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        token = torch.multinomial(probs, 1, generator=generator)  # [1, 1]
        token_id = int(token)
        yield token_id
        if token_id == stop_id:
            return
        logits, state = model.step(token.view(1), state)


def sample_text(
    model: RNNLanguageModel,
    tokenizer: Tokenizer,
    length: int,
    temperature: float = 1.0,
    seed: int = 0,
    stop_at_eos: bool = False,
) -> str:
    """A whole generated text as one string (used for the samples logged during training).

    The model runs in eval mode (no dropout), which also keeps this from drawing on torch's global
    random generator, so logging a sample never changes the course of training.
    """
    was_training = model.training
    model.eval()
    try:
        ids = generate(model, tokenizer, length, temperature, seed=seed, stop_at_eos=stop_at_eos)
        return tokenizer.decode(list(ids))
    finally:
        model.train(was_training)
