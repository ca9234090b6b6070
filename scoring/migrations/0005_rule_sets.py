import hashlib
import json

import django.db.models.deletion
from django.db import migrations, models

CODES = {"filtered_out": "f", "not_selected": "n", "not_sampled": "s", "queued": "q", "error": "e"}


def rule_set_digest(rules: list[str]) -> str:
    return hashlib.sha256(json.dumps(rules).encode()).hexdigest()


def decisions_to_codes(apps, schema_editor):
    """Each record's {rule id: decision} becomes a rule set (its rule ids, in the order they
    were stored) and a character per rule."""
    RuleSet = apps.get_model("scoring", "RuleSet")
    SpanDecisions = apps.get_model("scoring", "SpanDecisions")
    sets = {}
    records = SpanDecisions.objects.order_by("pk").only("pk", "project_id", "decisions")
    for record in records.iterator(chunk_size=2000):
        rules = list(record.decisions)
        key = (record.project_id, rule_set_digest(rules))
        if key not in sets:
            sets[key] = RuleSet.objects.get_or_create(
                project_id=key[0], digest=key[1], defaults={"rules": rules}
            )[0].pk
        SpanDecisions.objects.filter(pk=record.pk).update(
            rule_set_id=sets[key], codes="".join(CODES[record.decisions[rule]] for rule in rules)
        )


def codes_to_decisions(apps, schema_editor):
    SpanDecisions = apps.get_model("scoring", "SpanDecisions")
    decision_of = {code: decision for decision, code in CODES.items()}
    for record in SpanDecisions.objects.select_related("rule_set").iterator(chunk_size=2000):
        decisions = {rule: decision_of[code] for rule, code in zip(record.rule_set.rules, record.codes)}
        SpanDecisions.objects.filter(pk=record.pk).update(decisions=decisions)


class Migration(migrations.Migration):
    dependencies = [
        ("projects", "0001_initial"),
        ("scoring", "0004_lighter_writes"),
    ]

    operations = [
        migrations.CreateModel(
            name="RuleSet",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("rules", models.JSONField()),
                ("digest", models.CharField(max_length=64)),
                ("created", models.DateTimeField(auto_now_add=True)),
                (
                    "project",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="projects.project"
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("project", "digest"), name="rule_set_unique_in_project")
                ],
            },
        ),
        migrations.AddField(
            model_name="spandecisions",
            name="rule_set",
            field=models.ForeignKey(
                null=True,
                db_constraint=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="scoring.ruleset",
            ),
        ),
        migrations.AddField(model_name="spandecisions", name="codes", field=models.TextField(default="")),
        migrations.RunPython(decisions_to_codes, codes_to_decisions),
        migrations.RemoveField(model_name="spandecisions", name="decisions"),
        migrations.AlterField(
            model_name="spandecisions",
            name="rule_set",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="scoring.ruleset",
            ),
        ),
        migrations.AlterField(model_name="spandecisions", name="codes", field=models.TextField()),
    ]
