"""ps_type `anthropic.validation`: the Anthropic credential checked with the provider's cheapest authenticated call
(configs/system/providers.yml `ANTHROPIC.validation`); the verdict goes on the credential row. See
processors/integrations/_validation.py for the config."""

from convergence.processors.integrations._validation import CredentialValidation


def get_engine() -> CredentialValidation:
    return CredentialValidation("ANTHROPIC")
