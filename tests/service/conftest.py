"""API clients of the three users the service tests know, for the module's own ``stack``."""

import pytest

from tests.service.servicetools import TOKENS, client


@pytest.fixture(scope="module")
def admin(stack):
    return client(stack, stack.admin_token_file.read_text().strip())


@pytest.fixture(scope="module")
def alice(stack):
    return client(stack, TOKENS["alice"])


@pytest.fixture(scope="module")
def bob(stack):
    return client(stack, TOKENS["bob"])
