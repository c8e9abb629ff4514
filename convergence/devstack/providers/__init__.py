"""Stand-in servers for provider APIs, on 127.0.0.1, speaking the real wire formats.

- `openai_server.OpenAIStandIn`: OpenAI Organization Usage API and Costs API.
- `anthropic_server.AnthropicStandIn`: Anthropic Admin API usage and cost reports.
- `deepseek_server.DeepSeekStandIn`: DeepSeek's balance and chat completions (its only accounting).
- `common`: usage data (fixed or generated from a seed), buckets, cursors, fault injection.

Tests, `make run` and the benchmarks reach "the provider" through them without the internet. Each
server's docstring lists the documented and observed behaviour it reproduces.
Each server also runs on its own: `python -m convergence.devstack.providers.openai_server --models 50`.
"""
