"""LlamaCppLLM with the real bundled model: what the model evaluates, token by token.

Many GGUF chat models (Llama 3, Mistral, Gemma) have `tokenizer.ggml.add_bos_token`
set and a chat template that renders `{{ bos_token }}` itself. The bundled SmolLM2
has neither, so these tests load it with the flag forced on (a llama.cpp metadata
override) and give it such a template: exactly the situation of those models.
"""

from __future__ import annotations

import pytest

from bot.llm import GenerationParams, LlamaCppLLM, LLMError, Message, default_gguf_path

pytestmark = pytest.mark.slow

# the shape of Llama 3's and Gemma's templates: BOS rendered by the template, once, at the start
BOS_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)
# a template that leaves BOS to the tokenizer (as most older templates do)
PLAIN_TEMPLATE = BOS_TEMPLATE.removeprefix("{{ bos_token }}")
SHORT = GenerationParams(max_tokens=2, temperature=0.0)
PREFIX = [Message("system", "You answer questions about the documents.")]
MESSAGES = [*PREFIX, Message("user", "What colour is the sky?")]


def _model(*, add_bos: bool, template: str | None) -> LlamaCppLLM:
    """The bundled model, with its BOS flag and chat template set as a bigger model's would be."""
    from bot.llm import extra_buffers_wanted, open_llama

    llm = LlamaCppLLM(n_ctx=512, n_threads=1, n_batch=128)
    llm._llama = open_llama(
        default_gguf_path(),
        extra_buffers=extra_buffers_wanted("auto"),
        n_ctx=512,
        n_threads=1,
        n_threads_batch=1,
        n_batch=128,
        verbose=False,
        kv_overrides={"tokenizer.ggml.add_bos_token": add_bos},
    )
    if template is not None:
        llm._llama.metadata["tokenizer.chat_template"] = template
    llm._formatter = None
    return llm


def _evaluated(llm: LlamaCppLLM) -> list[int]:
    """The tokens the model has in its context now (prompt and what it generated)."""
    return [int(t) for t in llm._llama.input_ids[: llm._llama.n_tokens]]


def test_a_template_that_renders_bos_gets_exactly_one():
    llm = _model(add_bos=True, template=BOS_TEMPLATE)
    bos = llm._llama.token_bos()
    assert llm.render(MESSAGES).startswith(llm._llama._model.token_get_text(bos))  # the template renders it
    "".join(llm.stream(MESSAGES, SHORT))
    tokens = _evaluated(llm)
    assert tokens[0] == bos and tokens[1] != bos, tokens[:4]


def test_a_template_without_bos_gets_the_one_the_model_asks_for():
    llm = _model(add_bos=True, template=PLAIN_TEMPLATE)
    bos = llm._llama.token_bos()
    "".join(llm.stream(MESSAGES, SHORT))
    tokens = _evaluated(llm)
    assert tokens[0] == bos and tokens[1] != bos, tokens[:4]


def test_a_model_that_asks_for_no_bos_gets_the_template_text_only():
    llm = LlamaCppLLM(n_ctx=512, n_threads=1, n_batch=128)  # SmolLM2 as shipped: add_bos_token false
    "".join(llm.stream(MESSAGES, SHORT))
    expected = llm._llama.tokenize(llm.render(MESSAGES).encode("utf-8"), add_bos=False, special=True)
    assert _evaluated(llm)[: len(expected)] == expected


@pytest.mark.parametrize("template", [BOS_TEMPLATE, PLAIN_TEMPLATE])
def test_the_warmed_prefix_is_a_token_prefix_of_the_prompt(template):
    """warm() must evaluate what the prompt path will: else the KV cache is thrown away at the first question."""
    llm = _model(add_bos=True, template=template)
    llm.warm(PREFIX)
    warmed = _evaluated(llm)
    assert warmed and warmed.count(llm._llama.token_bos()) == 1
    "".join(llm.stream(MESSAGES, SHORT))
    assert _evaluated(llm)[: len(warmed)] == warmed


def test_a_prompt_longer_than_the_context_is_a_short_llm_error():
    llm = LlamaCppLLM(n_ctx=512, n_threads=1, n_batch=128)
    long = [*PREFIX, Message("user", "sky " * 800)]
    with pytest.raises(LLMError) as info:
        list(llm.stream(long, SHORT))
    message = str(info.value)
    assert "too long" in message and "512" in message
    assert len(message) < 160


def test_extra_buffer_types_are_off_by_default_on_amx_cpus_and_only_while_loading(tmp_path):
    # llama.cpp's AMX weight repacking crashed the process (SIGSEGV) on the first token with the
    # bundled Q4_1 model on an AMX CPU: "auto" leaves extra buffer types off there
    import llama_cpp.llama_cpp as low  # where llama_cpp.Llama takes its model parameters from

    from bot.llm import cpu_has_amx, extra_buffers_wanted, model_params

    amx = tmp_path / "amx"
    amx.write_text("processor : 0\nflags : fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n")
    plain = tmp_path / "plain"
    plain.write_text("processor : 0\nflags : fpu sse2 avx2 fma\n")
    assert cpu_has_amx(amx) and not cpu_has_amx(plain) and not cpu_has_amx(tmp_path / "missing")
    assert extra_buffers_wanted("auto", cpuinfo=amx) is False
    assert extra_buffers_wanted("auto", cpuinfo=plain) is True
    assert extra_buffers_wanted("on", cpuinfo=amx) is True and extra_buffers_wanted("off", cpuinfo=plain) is False
    assert low.llama_model_default_params().use_extra_bufts
    with model_params(extra_buffers=False):
        assert not low.llama_model_default_params().use_extra_bufts
    assert low.llama_model_default_params().use_extra_bufts  # restored after loading
    with model_params(extra_buffers=True):
        assert low.llama_model_default_params().use_extra_bufts
