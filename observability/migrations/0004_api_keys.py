"""API keys for machines (issue 10): a hash, a public prefix, one scope, revocation."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('observability', '0003_daily_cagg'),
    ]

    operations = [
        migrations.CreateModel(
            name='ApiKey',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=100)),
                ('prefix', models.CharField(max_length=16, unique=True)),
                ('key_hash', models.CharField(max_length=64)),
                ('scope', models.CharField(
                    choices=[('ingest', 'ingest'), ('read', 'read'), ('admin', 'admin')], max_length=10)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('last_used_at', models.DateTimeField(blank=True, null=True)),
                ('revoked_at', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'ordering': ['created_at', 'id'],
            },
        ),
    ]
