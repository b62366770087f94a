"""Tiny in-process fixtures' building blocks: a byte-level BPE tokenizer trained on the sentences
below and randomly initialised causal LMs of several architectures, built from configs.

Nothing is read from disk or the network; everything is seeded, float32, and small enough that a
forward pass takes milliseconds on one CPU thread.
"""

from __future__ import annotations

import torch

SENTENCES = [
    "The Eiffel Tower is located in the city of Paris.",
    "Paris is the capital of France and its largest city.",
    "The mother tongue of Danielle Darrieux is French.",
    "Danielle Darrieux was a French actress and singer.",
    "Michael Jordan plays the sport of basketball.",
    "Michael Jordan is a professional basketball player from Chicago.",
    "Toko Yasuda plays the guitar in a band.",
    "The Colosseum is located in the city of Rome.",
    "Rome is the capital of Italy.",
    "Berlin is the capital of Germany.",
    "Yesterday we flew to Paris for a week.",
    "Last summer we travelled to Rome by train.",
    "Albert Einstein was a physicist who worked in Berlin.",
    "The native language of Albert Einstein is German.",
    "Marie Curie was a chemist who lived in Paris.",
    "The Louvre is a museum in Paris.",
    "Lionel Messi plays the sport of football.",
    "Lionel Messi is a football player from Argentina.",
    "The Nile is a river in Africa.",
    "The Amazon is a river in South America.",
    "Mount Everest is the highest mountain in the world.",
    "The official language of Brazil is Portuguese.",
    "The official language of Spain is Spanish.",
    "Tokyo is the capital of Japan and a very large city.",
    "The Beatles were a band from Liverpool.",
    "William Shakespeare wrote plays in English.",
    "The sun rises in the east and sets in the west.",
    "A cat and a dog played in the garden all day.",
    "Apple was founded by Steve Jobs in California.",
    "The Danube flows through Vienna and Budapest.",
    "Many people speak English, French and German.",
    "The weather today is cold, but tomorrow it will be warm.",
]

ENDOFTEXT = "<|endoftext|>"
MAIN_ARCHITECTURES = ("gpt2", "llama", "gemma3", "gptneox")
ALL_ARCHITECTURES = (*MAIN_ARCHITECTURES, "gptj", "qwen2", "mistral")
HIDDEN = 48
INTERMEDIATE = 128  # 8/3 x hidden: every MLP output projection maps 128 -> 48
NUM_LAYERS = 3


def train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(SENTENCES, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, pad_token=ENDOFTEXT,
        unk_token=ENDOFTEXT,
    )


def build_model(architecture: str, vocab_size: int, seed: int = 0, num_layers: int = NUM_LAYERS):
    """A tiny randomly initialised causal LM of ``architecture`` (float32, eval mode)."""
    import transformers as tf

    special = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    common = {
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "max_position_embeddings": 128,
        **special,
    }
    if architecture == "gpt2":
        config = tf.GPT2Config(vocab_size=vocab_size, n_embd=HIDDEN, n_inner=INTERMEDIATE, n_layer=num_layers,
                               n_head=4, n_positions=128, **special)
        cls = tf.GPT2LMHeadModel
    elif architecture == "gptj":
        config = tf.GPTJConfig(vocab_size=vocab_size, n_embd=HIDDEN, n_inner=INTERMEDIATE, n_layer=num_layers,
                               n_head=4, rotary_dim=8, n_positions=128, **special)
        cls = tf.GPTJForCausalLM
    elif architecture == "llama":
        config = tf.LlamaConfig(num_key_value_heads=2, **common)
        cls = tf.LlamaForCausalLM
    elif architecture == "gemma3":
        # A short sliding window and a soft-cap make the Gemma-specific code paths matter.
        config = tf.Gemma3TextConfig(num_key_value_heads=2, head_dim=16, sliding_window=6,
                                     final_logit_softcapping=5.0,
                                     layer_types=(["sliding_attention", "full_attention"] * num_layers)[:num_layers],
                                     **common)
        cls = tf.Gemma3ForCausalLM
    elif architecture == "gptneox":
        config = tf.GPTNeoXConfig(**common)
        cls = tf.GPTNeoXForCausalLM
    elif architecture == "qwen2":
        config = tf.Qwen2Config(num_key_value_heads=2, **common)
        cls = tf.Qwen2ForCausalLM
    elif architecture == "mistral":
        config = tf.MistralConfig(num_key_value_heads=2, **common)
        cls = tf.MistralForCausalLM
    else:
        raise ValueError(architecture)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = cls(config).to(torch.float32).eval()
    # Default inits give nearly uniform next-token distributions; larger weights give a model
    # whose outputs depend visibly on its input, so wrong positions or keys change the numbers.
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed + 1)
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.15, generator=generator)
    return model


def save_tiny_folder(folder, architecture: str = "llama", seed: int = 0):
    """A tiny random model and the test tokenizer saved as a Hugging Face folder (for commands that load by path)."""
    tokenizer = train_tokenizer()
    build_model(architecture, len(tokenizer), seed=seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
