"""Generating text from a trained model, one token at a time.

Following the reference notes ("Sampling novel sequences"): start from a zero hidden state, draw
each next token from the model's distribution, feed it back as the next input, and stop at `<eos>`
(word models) or after the requested number of tokens.

The first input is the corpus's boundary token (`<eos>` for word models, a line break for
character models), so that the model starts as it would at the beginning of a line; an optional
prompt ("prime") follows it. The prompt is read in one call of the model; after that, generation
is incremental: one step per token with the carried state, never re-reading the prefix (in eval mode
`model.inference_step`, the same function as `model.step` with the weights laid out once; for up to
a few fp32 CPU streams, the fast layer's generation loop where it is loaded: the same steps and choices
as C calls on buffers made once, `lmtrain.fast.token_loop`).
`M` samples are generated together as a batch of `M` streams that start from the same state.

How the next token is chosen from the logits `z` `[M, V]` (`SamplingOptions`), in this order:
1. `no_unk`: `<unk>` gets probability 0. Renormalising the rest is exactly the distribution that
   resampling until a draw is not `<unk>` (the notes' "reject any <UNK>") produces, in one draw.
2. `greedy`: the argmax of what is left (temperature, top-k and top-p cannot change it).
3. Otherwise `z / temperature`; `top_k` keeps the K largest; `top_p` keeps the smallest set of most
   probable tokens whose probability reaches P (nucleus sampling, Holtzman et al. 2020); then one
   draw from the softmax (`draw`: one uniform number per stream, through the cumulative sum).

A dedicated `torch.Generator` makes the text a function of the seed alone, independent of any
other use of torch's random numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from lmtrain.data.batching import State
from lmtrain.data.tokenizer import EOS, Tokenizer, WordTokenizer, format_tokens
from lmtrain.errors import ConfigError
from lmtrain.model import backends
from lmtrain.model.language_model import RNNLanguageModel

UNKNOWN_MODES = ("error", "map", "skip")
"""What to do with prompt tokens outside the vocabulary: refuse, map to `<unk>`, or drop them."""


@dataclass(frozen=True)
class SamplingOptions:
    """How the next token is chosen from the model's logits (see the module docstring)."""

    temperature: float = 1.0
    greedy: bool = False
    top_k: int | None = None
    top_p: float | None = None
    no_unk: bool = False


def sampling_problems(options: SamplingOptions, tokenizer: Tokenizer) -> list[str]:
    """Everything wrong with `options` for this vocabulary, one phrase per problem."""
    problems = []
    temperature = options.temperature
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0):
        problems.append(
            f"--temperature must be a number greater than 0 (got {temperature}); "
            "1.0 samples the model's distribution, smaller values are more conservative"
        )
    if options.top_k is not None and not 1 <= options.top_k <= tokenizer.vocab_size:
        problems.append(
            f"--top-k must be between 1 and the vocabulary size {tokenizer.vocab_size} (got {options.top_k})"
        )
    if options.top_p is not None and not (0.0 < options.top_p <= 1.0):
        problems.append(f"--top-p must be in (0, 1] (got {options.top_p})")
    if options.greedy:
        ignored = [
            name
            for name, is_set in (
                ("--temperature", temperature != 1.0),
                ("--top-k", options.top_k is not None),
                ("--top-p", options.top_p is not None),
            )
            if is_set
        ]
        if ignored:
            problems.append(
                f"--greedy always takes the most probable token, so {' and '.join(ignored)} would have "
                "no effect; drop them or drop --greedy"
            )
    if options.no_unk and not isinstance(tokenizer, WordTokenizer):
        problems.append("--no-unk applies to word models; a character model has no <unk> token")
    return problems


def check_sample_request(
    options: SamplingOptions, tokenizer: Tokenizer, length: int, num_samples: int, unknown: str = "error"
) -> None:
    """Raise one ConfigError that lists every invalid value of a `sample` request."""
    problems = sampling_problems(options, tokenizer)
    if length < 1:
        problems.append(f"--length must be at least 1 token (got {length})")
    if num_samples < 1:
        problems.append(f"--num-samples must be at least 1 (got {num_samples})")
    elif num_samples > 1 and options.greedy:
        problems.append(
            f"--greedy gives the same text every time, so --num-samples {num_samples} would repeat it; "
            "use --num-samples 1 or drop --greedy"
        )
    problems.extend(unknown_mode_problems(unknown, tokenizer))
    if problems:
        raise ConfigError("; ".join(problems))


def unknown_mode_problems(unknown: str, tokenizer: Tokenizer) -> list[str]:
    if unknown not in UNKNOWN_MODES:
        return [f"--unknown must be one of {', '.join(UNKNOWN_MODES)} (got {unknown!r})"]
    if unknown == "map" and not isinstance(tokenizer, WordTokenizer):
        return ["--unknown map needs a word model (it maps to <unk>); use --unknown skip for characters"]
    return []


# ----- text in ------------------------------------------------------------------------------------


def text_tokens(tokenizer: Tokenizer, text: str) -> list[str]:
    """The tokens of `text` as the model reads them: characters, or words with `<eos>` at line breaks."""
    if isinstance(tokenizer, WordTokenizer):
        tokens: list[str] = []
        for number, line in enumerate(text.split("\n")):
            if number > 0:
                tokens.append(EOS)
            tokens.extend(line.split())
        return tokens
    return list(text)


def encode_text(
    tokenizer: Tokenizer, text: str, unknown: str = "error", what: str = "the prompt"
) -> list[int]:
    """The ids of a user's text; tokens outside the vocabulary are refused, mapped to `<unk>` or skipped.

    The refusal is a ConfigError that names every unknown token and the two ways around it.
    """
    problems = unknown_mode_problems(unknown, tokenizer)
    if problems:
        raise ConfigError(problems[0])
    tokens = text_tokens(tokenizer, text)
    unknown_tokens = list(dict.fromkeys(token for token in tokens if token not in tokenizer.index))
    if unknown_tokens and unknown == "error":
        kind = "characters" if tokenizer.kind == "char" else "words"
        ways = "--unknown skip drops them" + (
            ", --unknown map reads them as <unk>" if isinstance(tokenizer, WordTokenizer) else ""
        )
        raise ConfigError(
            f"{what} has {kind} outside the model's vocabulary: {format_tokens(unknown_tokens)}; "
            f"rephrase it with {kind} from the training text, or {ways}"
        )
    if unknown == "skip":
        return [tokenizer.index[token] for token in tokens if token in tokenizer.index]
    unk_id = getattr(tokenizer, "unk_id", None)
    return [tokenizer.index.get(token, unk_id) for token in tokens]


def boundary_token(tokenizer: Tokenizer) -> int | None:
    """The token that separates lines: `<eos>`, or the newline character if the vocabulary has one."""
    if isinstance(tokenizer, WordTokenizer):
        return tokenizer.eos_id
    return tokenizer.index.get("\n")


# ----- choosing the next token --------------------------------------------------------------------


def restrict_logits(
    logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """`logits` `[M, V]` with every token outside the top-k and the top-p nucleus set to -inf."""
    if top_k is not None and top_k < logits.size(-1):
        keep = torch.zeros_like(logits, dtype=torch.bool)
        keep.scatter_(-1, logits.topk(top_k, dim=-1).indices, True)
        logits = logits.masked_fill(~keep, -math.inf)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # A token is dropped when the more probable tokens before it already reach top_p; the most
        # probable token is always kept (the mass before it is 0 < top_p).
        mass_before = probs.cumsum(dim=-1) - probs
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, -math.inf)
        logits = torch.full_like(logits, -math.inf).scatter(-1, order, sorted_logits)
    return logits


def next_tokens(
    logits: torch.Tensor,
    options: SamplingOptions,
    banned: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The next token `[M]` of each stream from its logits `[M, V]`; `banned` never comes out."""
    logits = logits.float()
    if banned is not None:
        logits = logits.clone()
        logits[:, banned] = -math.inf
    if options.greedy:
        return logits.argmax(dim=-1)
    if options.temperature != 1.0:  # dividing by 1 changes nothing; skip the call
        logits = logits / options.temperature
    logits = restrict_logits(logits, options.top_k, options.top_p)
    return draw(logits.softmax(dim=-1), generator)


def draw(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token `[M]` from each row of `probs` `[M, V]`, by inverting the cumulative distribution.

    One uniform number u per row, and the token is the first whose cumulative probability exceeds
    u. `torch.multinomial` draws one random number per entry instead, which at V = 10,000 and M = 32
    takes about twice as long on a CPU. A token of probability 0 has the same cumulative value as
    the token before it, so it is never the first to exceed u.
    """
    u = torch.rand(probs.size(0), 1, generator=generator, device=probs.device, dtype=torch.float64)
    draw_tokens = backends.fast_operation("draw_tokens")
    tokens = None if draw_tokens is None else draw_tokens(probs, u)  # the same steps in one C call
    if tokens is not None:
        return tokens
    cdf = probs.double().cumsum(dim=-1)  # [M, V]
    tokens = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1)
    # u * total can round up to the total itself (once in 2^53 draws): take the most probable token.
    return torch.where(tokens < probs.size(-1), tokens, probs.argmax(dim=-1))


# ----- generation ---------------------------------------------------------------------------------


STEPPED_CONTEXT = 8
"""A context of at most this many tokens is read one token at a time by the generation step; a longer one
as one window through the model, whose cost hardly grows with its length up to a few dozen tokens (its
products are for a batch of one) but is several tokens' steps to begin with."""


def read_context(
    model: RNNLanguageModel, step: Callable, context: list[int], device: torch.device
) -> tuple[torch.Tensor, State]:
    """The logits `[1, V]` after the context's last token, and the state after it, for one stream."""
    if len(context) > STEPPED_CONTEXT:
        logits, state = model(torch.tensor(context, device=device).view(-1, 1), None)  # [T, 1, V]
        return logits[-1], state
    state = model.initial_state(1, device)
    for token in context:
        logits, state = step(torch.tensor([token], device=device), state)
    return logits, state


def start_state(
    model: RNNLanguageModel, step: Callable | None, context: list[int], num_samples: int, device: torch.device
) -> tuple[torch.Tensor, State]:
    """The logits `[M, V]` and the state of `M` streams after the context, read once for one stream and
    copied; with no context (a character model whose text had no line break, and no prompt) the initial
    state, and equal logits, so that the first token is drawn uniformly. `step` reads a short context
    (`read_context`); a longer one, or none, does without it."""
    if not context:
        logits = torch.zeros(num_samples, model.vocab_size, device=device)  # [M, V]: a uniform first draw
        return logits, model.initial_state(num_samples, device)
    logits, state = read_context(model, step, context, device)
    state = [tuple(t.expand(num_samples, -1).contiguous() for t in layer) for layer in state]
    return logits.expand(num_samples, -1), state  # [M, V]


def start_loop(
    loop, model: RNNLanguageModel, context: list[int], num_samples: int, device: torch.device
) -> None:
    """`start_state` for the fast layer's generation loop (`lmtrain.fast.token_loop`): a short
    context is fed to the loop itself, a token at a time for
    every stream (the loop's step costs what one stream's does), a longer one read as one window."""
    if len(context) > STEPPED_CONTEXT:
        loop.start(*start_state(model, None, context, num_samples, device))
        return
    loop.start(*start_state(model, None, [], num_samples, device))
    for token in context:
        loop.feed(token)


@torch.inference_mode()
def generate_steps(
    model: RNNLanguageModel,
    tokenizer: Tokenizer,
    length: int,
    options: SamplingOptions | None = None,
    prompt_ids: list[int] | None = None,
    num_samples: int = 1,
    seed: int = 0,
    stop_at_eos: bool = True,
) -> Iterator[list[int | None]]:
    """Yield, step by step, the new token of each of the `num_samples` streams.

    A stream that has stopped (it emitted `<eos>` with `stop_at_eos`) yields None from then on; the
    generation ends after `length` steps or when every stream has stopped. The model should be in
    eval mode (`restore_model` returns it so), or dropout would draw on torch's global generator.
    """
    options = options or SamplingOptions()
    device = model.decoder.weight.device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    context = list(prompt_ids or [])
    start = boundary_token(tokenizer)
    if start is not None:
        context.insert(0, start)
    stop_id = tokenizer.eos_id if stop_at_eos and isinstance(tokenizer, WordTokenizer) else None
    banned = tokenizer.unk_id if options.no_unk and isinstance(tokenizer, WordTokenizer) else None
    make_loop = backends.fast_operation("generation_loop")
    loop = None if make_loop is None else make_loop(model, num_samples)
    if loop is not None:  # the fast layer's loop on buffers made once (lmtrain.fast.token_loop)
        start_loop(loop, model, context, num_samples, device)
        draws = loop.tokens(length, options, banned, generator)
    else:
        # The per-token step with weights laid out once (model.inference_step), unless dropout is on.
        step = model.step if model.training else model.inference_step()
        logits, state = start_state(model, step, context, num_samples, device)
        draws = stepped_tokens(step, logits, state, length, options, banned, generator)
    active = [True] * num_samples
    for tokens in draws:
        ids = tokens.tolist()
        yield [token if running else None for token, running in zip(ids, active, strict=True)]
        if stop_id is not None:
            active = [running and token != stop_id for token, running in zip(ids, active, strict=True)]
            if not any(active):
                return


def stepped_tokens(
    step: Callable,
    logits: torch.Tensor,
    state: State,
    length: int,
    options: SamplingOptions,
    banned: int | None,
    generator: torch.Generator,
) -> Iterator[torch.Tensor]:
    """Each step's tokens `[M]`, `length` of them, from `logits` `[M, V]` and `state` on: `next_tokens`
    chooses, and `step(tokens, state) -> (logits, state)` runs the model when the next is asked for."""
    for position in range(length):
        tokens = next_tokens(logits, options, banned, generator)  # [M]
        yield tokens
        if position + 1 < length:
            logits, state = step(tokens, state)


def generate(
    model: RNNLanguageModel,
    tokenizer: Tokenizer,
    length: int,
    options: SamplingOptions | None = None,
    prompt_ids: list[int] | None = None,
    num_samples: int = 1,
    seed: int = 0,
    stop_at_eos: bool = True,
) -> list[list[int]]:
    """The generated token ids of each of the `num_samples` streams (without the prompt)."""
    samples: list[list[int]] = [[] for _ in range(num_samples)]
    steps = generate_steps(model, tokenizer, length, options, prompt_ids, num_samples, seed, stop_at_eos)
    for step in steps:
        for sample, token in zip(samples, step, strict=True):
            if token is not None:
                sample.append(token)
    return samples


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
        options = SamplingOptions(temperature=temperature)
        (ids,) = generate(model, tokenizer, length, options, seed=seed, stop_at_eos=stop_at_eos)
        return tokenizer.decode(ids)
    finally:
        model.train(was_training)


# ----- text out -----------------------------------------------------------------------------------


class TextStream:
    """Token ids to text pieces as they arrive: spaces between words, `<eos>` as a line break."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.at_line_start = True

    def piece(self, token_id: int) -> str:
        text = self.tokenizer.decode_token(token_id, is_first=self.at_line_start)
        self.at_line_start = text.endswith("\n")
        return text

    def end(self) -> str:
        """What completes the text: a final line break unless it already ends with one."""
        return "" if self.at_line_start else "\n"


def render(tokenizer: Tokenizer, ids: list[int]) -> str:
    """The text of `ids` exactly as `TextStream` streams it, ending with a line break."""
    stream = TextStream(tokenizer)
    return "".join(stream.piece(token) for token in ids) + stream.end()
