"""The console's routes, mounted on the admin service at ``/`` (see ``services/admin/app.py``)."""

from __future__ import annotations

from litestar import Router
from litestar.di import Provide
from litestar.static_files import create_static_files_router

from services.admin.console import (
    auth_pages,
    catalog_pages,
    import_pages,
    segment_pages,
    settings_pages,
    user_pages,
)
from services.admin.console.web import (
    HERE,
    CsrfRefused,
    SignInRequired,
    csrf_refused,
    provide_console,
    sign_in_redirect,
)


def console_router() -> Router:
    """Every console page and its static files (htmx, the style sheet, the ES modules)."""
    static = create_static_files_router(
        path="/static", directories=[HERE / "static"], include_in_schema=False
    )
    return Router(
        path="/",
        route_handlers=[
            static,
            auth_pages.home,
            auth_pages.sign_in_form,
            auth_pages.sign_in_submit,
            auth_pages.sign_out,
            auth_pages.choose_environment,
            segment_pages.segment_list,
            segment_pages.segment_table,
            segment_pages.segment_new,
            segment_pages.segment_edit,
            segment_pages.segment_detail,
            segment_pages.segment_status,
            segment_pages.segment_changes,
            segment_pages.segment_members,
            segment_pages.members_add,
            segment_pages.members_remove,
            segment_pages.segment_delete,
            user_pages.user_list,
            user_pages.save_columns,
            user_pages.add_to_segment,
            user_pages.user_profile,
            user_pages.why,
            user_pages.tag_user,
            user_pages.erase,
            import_pages.import_list,
            import_pages.import_detail,
            import_pages.import_start,
            import_pages.import_cancel,
            catalog_pages.tag_list,
            catalog_pages.tag_change,
            catalog_pages.attribute_list,
            catalog_pages.attribute_type,
            catalog_pages.attribute_warnings,
            settings_pages.settings_page,
            settings_pages.rotate_key,
            settings_pages.identity_change,
            settings_pages.webhook_change,
            settings_pages.deliveries,
            settings_pages.account_change,
        ],
        dependencies={"console": Provide(provide_console)},
        exception_handlers={SignInRequired: sign_in_redirect, CsrfRefused: csrf_refused},
        include_in_schema=False,
    )
