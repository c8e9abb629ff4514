"""ps_type `openai.seed_csv`: the org's OpenAI pricing and subscription tables from the default CSVs
(`configs/openai/seed/data/*.csv`, typed by `configs/openai/seed/schemas/*.json`).

Config: mode (if_empty | overwrite), tables [{table, csv_file, schema_file, unique}]. See processors/_llm/seed.py.
"""

from convergence.processors._llm.seed import SeedCsv


def get_engine() -> SeedCsv:
    return SeedCsv()
