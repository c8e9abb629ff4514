"""ps_type `deepseek.seed_csv`: the org's DeepSeek pricing table from
`configs/deepseek/seed/data/default_pricing.csv`, typed by `configs/deepseek/seed/schemas/deepseek_pricing.json`.
Same engine as openai.seed_csv (processors/_llm/seed.py).
"""

from convergence.processors._llm.seed import SeedCsv


def get_engine() -> SeedCsv:
    return SeedCsv()
