"""ps_type `openai.validation`: the OpenAI credential checked with the provider's cheapest authenticated call
(configs/system/providers.yml `OPENAI.validation`); the verdict goes on the credential row. See
processors/integrations/_validation.py for the config."""

from convergence.processors.integrations._validation import CredentialValidation


def get_engine() -> CredentialValidation:
    return CredentialValidation("OPENAI")
