"""Talking to OpenAI-compatible inference servers (vLLM, SGLang, or `dgrpo serve`).

`client` is the one place requests are made (the `openai` package); `teacher` scores completions
with a remote teacher, `rollout` samples groups on a server and `weights` pushes the policy's
weights to it after every optimizer step.
"""
