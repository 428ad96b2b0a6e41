"""Action service stand-in: the datastore methods of st2's ActionService."""
from st2tests.mocks.datastore import MockDatastoreService


class MockActionWrapper:
    def __init__(self, pack="tests", class_name="Unknown"):
        self._pack = pack
        self._class_name = class_name


class MockActionService:
    def __init__(self, action_wrapper):
        self._action_wrapper = action_wrapper
        self.datastore_service = MockDatastoreService(
            pack_name=action_wrapper._pack, class_name=action_wrapper._class_name)

    def get_user_info(self):
        return {"username": "stanley", "rbac": {"is_admin": True, "enabled": False}}

    def list_values(self, local=True, prefix=None, limit=None, offset=None):
        return self.datastore_service.list_values(local=local, prefix=prefix, limit=limit, offset=offset)

    def get_value(self, name, local=True, scope="system", decrypt=False):
        return self.datastore_service.get_value(name, local=local, scope=scope, decrypt=decrypt)

    def set_value(self, name, value, ttl=None, local=True, scope="system", encrypt=False):
        return self.datastore_service.set_value(name, value, ttl=ttl, local=local, scope=scope,
                                                encrypt=encrypt)

    def delete_value(self, name, local=True, scope="system"):
        return self.datastore_service.delete_value(name, local=local, scope=scope)
