"""ps_type `deepseek.validation`: the DeepSeek API key checked with its cheapest authenticated call
(configs/system/providers.yml `DEEPSEEK.validation`: GET /user/balance); the verdict goes on the credential
row. See processors/integrations/_validation.py for the config."""

from convergence.processors.integrations._validation import CredentialValidation


def get_engine() -> CredentialValidation:
    return CredentialValidation("DEEPSEEK")
