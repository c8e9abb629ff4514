"""Code shared by the LLM provider processors (OpenAI, Anthropic). Not a provider: the leading underscore
keeps it out of ps_type resolution (`_llm.x` never matches `provider.domain`)."""
