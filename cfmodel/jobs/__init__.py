"""The ``spark-submit`` entry scripts, one per stage (``jobs/<stage>.py`` in a checkout is this directory).

From an installed wheel, ``python -m cfmodel.jobs <stage>`` prints the script's path::

    spark-submit --master yarn "$(python -m cfmodel.jobs pipeline)" --conf cluster.yaml
"""
