"""ps_type `anthropic.seed_csv`: the org's Anthropic pricing table from
`configs/anthropic/seed/data/default_pricing.csv`, typed by `configs/anthropic/seed/schemas/anthropic_pricing.json`.
Same engine as openai.seed_csv (processors/_llm/seed.py).
"""

from convergence.processors._llm.seed import SeedCsv


def get_engine() -> SeedCsv:
    return SeedCsv()
