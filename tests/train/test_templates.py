"""Assistant-only loss with the chat templates of released models (tests/train/templates, none with
{% generation %} markers): the mask covers exactly each assistant turn's content and end-of-turn token, as
the template renders the conversation, and a template that drops history is refused naming the row."""

from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from barkit.errors import BarkitError
from barkit.tiny import CHAT_TEMPLATE, tiny_tokenizer
from barkit.train import data
from barkit.train.chat import has_generation_markers

TEMPLATES = Path(__file__).parent / "templates"
SPECIALS = ["<|endoftext|>", "<|pad|>", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>", "<|system|>", "<|user|>",
            "<|assistant|>", "<s>", "</s>", "[INST]", "[/INST]", "<think>", "</think>"]
# template file, bos, eos (as the model's tokenizer has them)
MODELS = {
    "olmo2-instruct": ("olmo2_instruct.jinja", "<|endoftext|>", "<|endoftext|>"),
    "tulu3": ("tulu3.jinja", "<|begin_of_text|>", "<|end_of_text|>"),
    "llama3-instruct": ("llama3_instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "qwen2.5-instruct": ("qwen2_5_instruct.jinja", None, "<|im_end|>"),
    "qwen3": ("qwen3.jinja", None, "<|im_end|>"),
    "mistral-instruct-v0.3": ("mistral_instruct_v0_3.jinja", "<s>", "</s>"),
}
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3 + 3?"},
        {"role": "assistant", "content": "6, of course."}]
# what each assistant turn trains on: content and end-of-turn token, as the template renders the whole chat
EXPECTED = {
    "olmo2-instruct": ["4<|endoftext|>", "6, of course.<|endoftext|>"],
    "tulu3": ["4<|end_of_text|>", "6, of course.<|end_of_text|>"],
    "llama3-instruct": ["4<|eot_id|>", "6, of course.<|eot_id|>"],
    "qwen2.5-instruct": ["4<|im_end|>", "6, of course.<|im_end|>"],
    # Qwen 3 keeps the (empty) think block only on turns after the last user message
    "qwen3": ["4<|im_end|>", "<think>\n\n</think>\n\n6, of course.<|im_end|>"],
    # Mistral v0.3 answers after a space; its system prompt only shows when the chat ends with a user turn
    "mistral-instruct-v0.3": [" 4</s>", " 6, of course.</s>"],
}


@pytest.fixture(scope="module")
def base_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["you are qwen, a helpful assistant", "be brief 2 + 2 and 3 + 3 of course"] * 3,
                            trainer=trainer)
    return tok


def _tokenizer(base, model: str):
    file, bos, eos = MODELS[model]
    return PreTrainedTokenizerFast(tokenizer_object=base, bos_token=bos, eos_token=eos, pad_token="<|pad|>",
                                   additional_special_tokens=SPECIALS, chat_template=(TEMPLATES / file).read_text())


def _trained_runs(example: data.Example, tokenizer) -> list[str]:
    """The decoded runs of consecutive trained tokens."""
    runs, current = [], []
    for token, label in zip(example.input_ids, example.labels):
        if label != data.IGNORE:
            current.append(token)
        elif current:
            runs, current = [*runs, current], []
    runs += [current] if current else []
    return [tokenizer.decode(run) for run in runs]


@pytest.mark.parametrize("model", list(MODELS))
def test_each_assistant_turn_is_trained_with_its_end_token(base_tokenizer, model):
    tokenizer = _tokenizer(base_tokenizer, model)
    assert not has_generation_markers(tokenizer)
    example, truncated = data.chat_example("x.jsonl:1", {"messages": CHAT}, tokenizer, 512)
    assert not truncated
    assert _trained_runs(example, tokenizer) == EXPECTED[model]
    assert tokenizer.decode(example.input_ids) == tokenizer.apply_chat_template(CHAT, tokenize=False)


@pytest.mark.parametrize("model", list(MODELS))
def test_a_one_turn_chat_trains_what_the_model_generates_after_its_prompt(base_tokenizer, model):
    tokenizer = _tokenizer(base_tokenizer, model)
    chat = CHAT[1:3]
    example, _ = data.chat_example("x.jsonl:1", {"messages": chat}, tokenizer, 512)
    prompt = tokenizer.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    whole = tokenizer.apply_chat_template(chat, tokenize=False)
    assert _trained_runs(example, tokenizer) == [whole[len(prompt):].rstrip()]


def test_qwen3_reasoning_in_the_last_turn_is_trained(base_tokenizer):
    tokenizer = _tokenizer(base_tokenizer, "qwen3")
    chat = [*CHAT[1:4], {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n6"}]
    example, _ = data.chat_example("x.jsonl:1", {"messages": chat}, tokenizer, 512)
    assert _trained_runs(example, tokenizer) == ["4<|im_end|>", "<think>\nadd them\n</think>\n\n6<|im_end|>"]


def test_a_template_that_drops_past_assistant_turns_is_refused_naming_the_row(base_tokenizer, tmp_path):
    tokenizer = _tokenizer(base_tokenizer, "qwen2.5-instruct")
    tokenizer.chat_template = ("{% for m in messages %}{% if m.role != 'assistant' or loop.last %}"
                               "{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endif %}"
                               "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    path = tmp_path / "sft.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                    + '{"messages": ' + str(CHAT).replace("'", '"') + '}\n')
    with pytest.raises(BarkitError, match=r"sft.jsonl:2: the chat template drops assistant turn 3 from the "
                                          r"conversation once later turns follow"):
        data.tokenize_chats(path, tokenizer, 512)


def test_a_template_with_markers_gives_the_same_mask_as_prefix_rendering():
    marked = tiny_tokenizer()
    plain = tiny_tokenizer()
    plain.chat_template = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    row = {"messages": [{"role": "user", "content": "1 + 2"}, {"role": "assistant", "content": "3"},
                        {"role": "user", "content": "the fox"}, {"role": "assistant", "content": "jumps"}]}
    a, _ = data.chat_example("x.jsonl:1", row, marked, 128)
    b, _ = data.chat_example("x.jsonl:1", row, plain, 128)
    assert a == b and a.num_targets > 0
