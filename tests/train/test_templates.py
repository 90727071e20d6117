"""Assistant-only loss for chat templates without {% generation %} markers: each assistant turn is located by
rendering the conversation prefix by prefix; the mask covers exactly its content and end-of-turn token."""

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from barkit.tiny import CHAT_TEMPLATE, tiny_tokenizer
from barkit.train import data

# In the style of released models' templates (role headers, end-of-turn tokens, BOS, default system
# prompts, trimming, trailing newlines), none with generation markers.
TEMPLATES = {
    "llama3": ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
               "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + "
               "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
               "{{ content }}{% endfor %}{% if add_generation_prompt %}"
               "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}", "<|eot_id|>"),
    "qwen2.5 (chatml, default system)": (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}", "<|im_end|>"),
    "tulu3 / olmo2": ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
                      "{{ '<|system|>\\n' + message['content'] + '\\n' }}{% elif message['role'] == 'user' %}"
                      "{{ '<|user|>\\n' + message['content'] + '\\n' }}{% elif message['role'] == 'assistant' %}"
                      "{% if not loop.last %}{{ '<|assistant|>\\n' + message['content'] + eos_token + '\\n' }}"
                      "{% else %}{{ '<|assistant|>\\n' + message['content'] + eos_token }}{% endif %}{% endif %}"
                      "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}{% endfor %}",
                      "<|endoftext|>"),
    "mistral": ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
                "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
                "{{ message['content'] + eos_token }}{% endif %}{% endfor %}", "<|endoftext|>"),
}
SPECIALS = ["<|endoftext|>", "<|pad|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|eot_id|>", "<|im_start|>", "<|im_end|>", "<|system|>", "<|user|>", "<|assistant|>", "[INST]",
            "[/INST]"]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3 + 3?"},
        {"role": "assistant", "content": "6, of course."}]


@pytest.fixture(scope="module")
def base_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["you are a helpful assistant", "be brief 2 + 2 and 3 + 3 of course"], trainer=trainer)
    return tok


def _tokenizer(base, template: str):
    return PreTrainedTokenizerFast(tokenizer_object=base, bos_token="<|begin_of_text|>", eos_token="<|endoftext|>",
                                   pad_token="<|pad|>", additional_special_tokens=SPECIALS[2:],
                                   chat_template=template)


@pytest.mark.parametrize("family", list(TEMPLATES))
def test_mask_covers_each_assistant_turn_and_its_end_token(base_tokenizer, family, tmp_path):
    template, end = TEMPLATES[family]
    if family == "mistral":
        chat = CHAT[1:]  # no system role in this template
    else:
        chat = CHAT
    tokenizer = _tokenizer(base_tokenizer, template)
    example, truncated = data.chat_example(tmp_path / "x.jsonl", 1, {"messages": chat}, tokenizer, 512)
    assert not truncated
    kept = [t for t in example.labels if t != data.IGNORE]
    decoded = tokenizer.decode(kept)
    assert decoded == "4" + end + "6, of course." + end
    assert tokenizer.decode(example.input_ids) == tokenizer.apply_chat_template(chat, tokenize=False)


def test_a_template_with_markers_gives_the_same_mask_as_prefix_rendering(tmp_path):
    marked = tiny_tokenizer()
    plain = tiny_tokenizer()
    plain.chat_template = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    row = {"messages": [{"role": "user", "content": "1 + 2"}, {"role": "assistant", "content": "3"},
                        {"role": "user", "content": "the fox"}, {"role": "assistant", "content": "jumps"}]}
    a, _ = data.chat_example(tmp_path / "x.jsonl", 1, row, marked, 128)
    b, _ = data.chat_example(tmp_path / "x.jsonl", 1, row, plain, 128)
    assert a == b and a.num_targets > 0
