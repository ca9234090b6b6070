from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin

from projects import services
from projects.models import APIKey, Comment, Membership, Organization, Project, ProjectGrant, Span, User


@admin.register(User)
class OnlinescoreUserAdmin(UserAdmin):
    list_display = ["username", "email", "is_service_account", "is_staff", "is_active"]
    list_filter = ["is_service_account", "is_staff", "is_active"]
    fieldsets = UserAdmin.fieldsets + (("Onlinescore", {"fields": ["is_service_account"]}),)
    add_fieldsets = UserAdmin.add_fieldsets + ((None, {"fields": ["email", "is_service_account"]}),)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "created"]
    search_fields = ["name"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organization", "role", "created"]
    list_filter = ["role", "organization"]
    autocomplete_fields = ["user", "organization"]


class GrantInline(admin.TabularInline):
    model = ProjectGrant
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "organization", "id", "created"]
    list_filter = ["organization"]
    search_fields = ["name", "id"]
    readonly_fields = ["id", "created", "updated"]
    inlines = [GrantInline]


@admin.register(ProjectGrant)
class ProjectGrantAdmin(admin.ModelAdmin):
    list_display = ["user", "project", "object_type", "permission"]
    list_filter = ["object_type", "permission", "project__organization"]
    autocomplete_fields = ["user", "project"]


class APIKeyAddForm(forms.ModelForm):
    class Meta:
        model = APIKey
        fields = ["organization", "user", "name"]

    def clean(self):
        data = super().clean()
        organization, user = data.get("organization"), data.get("user")
        if (
            organization
            and user
            and not Membership.objects.filter(organization=organization, user=user).exists()
        ):
            raise forms.ValidationError(
                f"{user} is not a member of {organization}: add the membership first."
            )
        return data


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    list_display = ["__str__", "name", "organization", "user", "created", "last_used", "revoked_at"]
    list_filter = ["organization", "revoked_at"]
    fields = ["organization", "user", "name", "prefix", "created", "last_used", "revoked_at"]
    readonly_fields = ["prefix", "created", "last_used", "revoked_at"]
    autocomplete_fields = ["user", "organization"]
    actions = ["revoke"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = APIKeyAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return self.fields if obj else APIKeyAddForm.Meta.fields

    def get_readonly_fields(self, request, obj=None):
        # Who a key belongs to is fixed once it exists.
        return self.readonly_fields + (["organization", "user"] if obj else [])

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        key, raw = services.api_key_create(organization=obj.organization, user=obj.user, name=obj.name)
        obj.pk = key.pk
        obj.refresh_from_db()
        messages.warning(
            request, f"The new API key is {raw} . Copy it now: it is not stored and cannot be shown again."
        )

    @admin.action(description="Revoke the selected API keys")
    def revoke(self, request, queryset):
        for key in queryset:
            services.api_key_revoke(key=key)
        messages.success(request, f"Revoked {queryset.count()} key(s).")


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Span)
class SpanAdmin(ReadOnlyAdmin):
    list_display = ["name", "type", "row_id", "project", "is_root", "created", "ended_at", "deleted"]
    list_filter = ["project", "is_root", "type", "deleted"]
    search_fields = ["row_id", "span_id", "root_span_id", "name"]
    date_hierarchy = "created"
    list_select_related = ["project"]
    show_full_result_count = False


@admin.register(Comment)
class CommentAdmin(ReadOnlyAdmin):
    list_display = ["span_row_id", "project", "created", "deleted"]
    list_filter = ["project"]
    search_fields = ["span_row_id", "row_id"]
