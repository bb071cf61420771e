from django.db import models


class Order(models.Model):
    total = models.IntegerField()


class Event(models.Model):
    """One row per task run that records itself: the ids are the order the tasks ran in."""

    label = models.CharField(max_length=100)
