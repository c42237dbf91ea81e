"""Glance's policy rules and their defaults (glance/policies/{base,image,tasks,
metadef,discovery}.py): the names, the secure-RBAC check strings, and the
pre-RBAC ("legacy") defaults Glance still declares as deprecated rules.

With ``[oslo_policy] enforce_new_defaults = true`` (the default, as in Glance
33) only the check strings below count. With ``false`` oslo.policy allows what
either the new check string or the legacy one allows, for every rule the
operator's policy file does not set, exactly as Glance: for most image, member
and task rules the legacy default is ``rule:default`` (empty: anybody), the
other checks of the services (visibility, ownership) still apply.
"""

from __future__ import annotations

from oslo_policy import policy as oslo_policy

from glimpse.auth import policy_plugins

policy_plugins.install()   # before the defaults below parse their check strings

# --- Glance's check strings (glance/policies/base.py) -----------------------------
PROJECT_MEMBER = "role:member and project_id:%(project_id)s"
PROJECT_READER = "role:reader and project_id:%(project_id)s"
IMAGE_MEMBER_CHECK = "project_id:%(member_id)s"
COMMUNITY_VISIBILITY_CHECK = "'community':%(visibility)s"
PUBLIC_VISIBILITY_CHECK = "'public':%(visibility)s"
SHARED_VISIBILITY_CHECK = "'shared':%(visibility)s"
_VISIBLE = (f"project_id:%(project_id)s or {IMAGE_MEMBER_CHECK} or {COMMUNITY_VISIBILITY_CHECK}"
            f" or {PUBLIC_VISIBILITY_CHECK} or {SHARED_VISIBILITY_CHECK}")
ADMIN = "rule:context_is_admin"
DEFAULT = "rule:default"
ADMIN_OR_PROJECT_MEMBER = f"{ADMIN} or ({PROJECT_MEMBER})"
ADMIN_OR_PROJECT_READER = f"{ADMIN} or ({PROJECT_READER})"
ADMIN_OR_PROJECT_READER_GET_IMAGE = f"{ADMIN} or (role:reader and ({_VISIBLE}))"
ADMIN_OR_PROJECT_MEMBER_DOWNLOAD_IMAGE = f"{ADMIN} or (role:member and ({_VISIBLE}))"
ADMIN_OR_PROJECT_MEMBER_CREATE_IMAGE = f"{ADMIN} or ({PROJECT_MEMBER} and project_id:%(owner)s)"
ADMIN_OR_SHARED_MEMBER = f"{ADMIN} or (role:member and {IMAGE_MEMBER_CHECK})"
ADMIN_OR_PROJECT_READER_OR_SHARED_MEMBER = (
    f"{ADMIN} or role:reader and (project_id:%(project_id)s or {IMAGE_MEMBER_CHECK})")
SERVICE = "rule:service_api"
# glance/policies/base.py and metadef.py: reads for a reader of the owning project
# (or of any project for a public namespace), writes through ``metadef_admin``.
ADMIN_OR_PROJECT_READER_GET_NAMESPACE = (
    f"{ADMIN} or (role:reader and (project_id:%(project_id)s or {PUBLIC_VISIBILITY_CHECK}))")
METADEF_ADMIN = "rule:metadef_admin"
SERVICE_OR_PROJECT_MEMBER = f"{SERVICE} or ({PROJECT_MEMBER} and project_id:%(owner)s)"

_PROJECT = ["project"]

_DEPRECATED_REASON = "The image API now supports roles."
# Glance's deprecated_rule check strings (glance/policies/*.py).
LEGACY_DEFAULTS: dict[str, str] = {
    **dict.fromkeys((
        "add_image", "delete_image", "get_image", "get_images", "modify_image",
        "communitize_image", "download_image", "upload_image", "delete_image_location",
        "get_image_location", "set_image_location", "add_member", "delete_member",
        "get_member", "get_members", "modify_member", "deactivate", "reactivate",
        "get_task", "get_tasks", "add_task"), DEFAULT),
    **dict.fromkeys((
        "get_metadef_namespace", "get_metadef_namespaces", "get_metadef_object",
        "get_metadef_objects", "list_metadef_resource_types", "get_metadef_resource_type",
        "get_metadef_property", "get_metadef_properties", "get_metadef_tag",
        "get_metadef_tags"), "rule:metadef_default"),
    "stores_info_detail": ADMIN,
    "default": ADMIN,
}


def _legacy(name: str) -> oslo_policy.DeprecatedRule | None:
    """The rule's pre-RBAC default, as Glance declares it (None: it has none)."""
    check = LEGACY_DEFAULTS.get(name)
    if check is None:
        return None
    return oslo_policy.DeprecatedRule(name=name, check_str=check,
                                      deprecated_reason=_DEPRECATED_REASON,
                                      deprecated_since="W")


def _rule(name: str, check: str, description: str = "") -> oslo_policy.RuleDefault:
    return oslo_policy.RuleDefault(name=name, check_str=check, description=description or name,
                                   scope_types=_PROJECT, deprecated_rule=_legacy(name))


RULES: list[oslo_policy.RuleDefault] = [
    oslo_policy.RuleDefault(name="default", check_str="",
                            description="Rule of policies the file leaves out.",
                            deprecated_rule=_legacy("default")),
    oslo_policy.RuleDefault(name="context_is_admin", check_str="role:admin",
                            description="Who is an administrator."),
    oslo_policy.RuleDefault(name="service_api", check_str="role:service or role:admin",
                            description="Service-to-service API."),
    _rule("add_image", ADMIN_OR_PROJECT_MEMBER_CREATE_IMAGE, "Create an image."),
    _rule("delete_image", ADMIN_OR_PROJECT_MEMBER, "Delete an image."),
    _rule("get_image", ADMIN_OR_PROJECT_READER_GET_IMAGE, "Show an image."),
    _rule("get_images", ADMIN_OR_PROJECT_READER, "List images."),
    _rule("modify_image", ADMIN_OR_PROJECT_MEMBER, "Update an image."),
    _rule("publicize_image", ADMIN, "Make an image public."),
    _rule("communitize_image", ADMIN_OR_PROJECT_MEMBER, "Make an image community."),
    _rule("download_image", ADMIN_OR_PROJECT_MEMBER_DOWNLOAD_IMAGE, "Download image data."),
    _rule("download_from_store", ADMIN_OR_PROJECT_MEMBER_DOWNLOAD_IMAGE,
          "Download image data from a given store."),
    _rule("upload_image", ADMIN_OR_PROJECT_MEMBER, "Upload image data."),
    _rule("delete_image_location", ADMIN, "Delete an image location."),
    _rule("get_image_location", ADMIN_OR_PROJECT_READER, "Show image locations."),
    _rule("set_image_location", ADMIN_OR_PROJECT_MEMBER, "Set image locations."),
    _rule("add_image_location", SERVICE_OR_PROJECT_MEMBER, "Add an image location."),
    _rule("fetch_image_location", SERVICE, "List image locations."),
    _rule("add_member", ADMIN_OR_PROJECT_MEMBER, "Share an image with a project."),
    _rule("delete_member", ADMIN_OR_PROJECT_MEMBER, "Stop sharing an image."),
    _rule("get_member", ADMIN_OR_PROJECT_READER_OR_SHARED_MEMBER, "Show an image member."),
    _rule("get_members", ADMIN_OR_PROJECT_READER_OR_SHARED_MEMBER, "List image members."),
    _rule("modify_member", ADMIN_OR_SHARED_MEMBER, "Accept or reject a shared image."),
    _rule("manage_image_cache", ADMIN, "Manage the image cache."),
    _rule("deactivate", ADMIN_OR_PROJECT_MEMBER, "Deactivate an image."),
    _rule("reactivate", ADMIN_OR_PROJECT_MEMBER, "Reactivate an image."),
    _rule("copy_image", ADMIN, "Copy an image to other stores."),
    _rule("get_task", DEFAULT, "Show a task."),
    _rule("get_tasks", DEFAULT, "List tasks."),
    _rule("add_task", DEFAULT, "Create a task."),
    _rule("modify_task", DEFAULT, "Update a task."),
    _rule("tasks_api_access", ADMIN, "Use the /v2/tasks API."),
    _rule("stores_info_detail", ADMIN, "Show store details."),
    # metadata definitions (glance/policies/metadef.py)
    oslo_policy.RuleDefault(name="metadef_default", check_str="",
                            description="Former default of metadef rules."),
    oslo_policy.RuleDefault(name="metadef_admin", check_str=ADMIN,
                            description="Who may change metadata definitions."),
    _rule("get_metadef_namespace", ADMIN_OR_PROJECT_READER_GET_NAMESPACE, "Show a namespace."),
    _rule("get_metadef_namespaces", ADMIN_OR_PROJECT_READER, "List namespaces."),
    _rule("modify_metadef_namespace", METADEF_ADMIN, "Update a namespace."),
    _rule("add_metadef_namespace", METADEF_ADMIN, "Create a namespace."),
    _rule("delete_metadef_namespace", METADEF_ADMIN, "Delete a namespace."),
    _rule("get_metadef_object", ADMIN_OR_PROJECT_READER_GET_NAMESPACE, "Show an object."),
    _rule("get_metadef_objects", ADMIN_OR_PROJECT_READER_GET_NAMESPACE, "List objects."),
    _rule("modify_metadef_object", METADEF_ADMIN, "Update an object."),
    _rule("add_metadef_object", METADEF_ADMIN, "Create an object."),
    _rule("delete_metadef_object", METADEF_ADMIN, "Delete an object."),
    _rule("list_metadef_resource_types", ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
          "List resource types."),
    _rule("get_metadef_resource_type", ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
          "Show a resource type association."),
    _rule("add_metadef_resource_type_association", METADEF_ADMIN,
          "Associate a resource type with a namespace."),
    _rule("remove_metadef_resource_type_association", METADEF_ADMIN,
          "Remove a resource type association."),
    _rule("get_metadef_property", ADMIN_OR_PROJECT_READER_GET_NAMESPACE, "Show a property."),
    _rule("get_metadef_properties", ADMIN_OR_PROJECT_READER_GET_NAMESPACE, "List properties."),
    _rule("modify_metadef_property", METADEF_ADMIN, "Update a property."),
    _rule("add_metadef_property", METADEF_ADMIN, "Create a property."),
    _rule("remove_metadef_property", METADEF_ADMIN, "Delete a property."),
    _rule("get_metadef_tag", ADMIN_OR_PROJECT_READER_GET_NAMESPACE, "Show a tag."),
    _rule("get_metadef_tags", ADMIN_OR_PROJECT_READER_GET_NAMESPACE, "List tags."),
    _rule("modify_metadef_tag", METADEF_ADMIN, "Update a tag."),
    _rule("add_metadef_tag", METADEF_ADMIN, "Create a tag."),
    _rule("add_metadef_tags", METADEF_ADMIN, "Create tags."),
    _rule("delete_metadef_tag", METADEF_ADMIN, "Delete a tag."),
    _rule("delete_metadef_tags", METADEF_ADMIN, "Delete all tags of a namespace."),
]

RULE_NAMES = frozenset(r.name for r in RULES)
