"""pytest plugin of retrying-uow (registered as ``retrying_uow``): fixtures for users' tests."""
