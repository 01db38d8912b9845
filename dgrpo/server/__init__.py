"""`dgrpo serve`: the OpenAI-compatible completions API served by any local HF model.

`engine` computes (completions by token ids with `logprobs` / `prompt_logprobs`, tokenize,
weight updates); `http` maps the routes of vLLM's server onto it, so that the trainer speaks one
protocol to vLLM, SGLang-style servers and this one.
"""
