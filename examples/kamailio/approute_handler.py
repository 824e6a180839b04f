"""app_python3 entry script for approute.

Point Kamailio at this file:

    modparam("app_python3", "load", "/etc/kamailio/approute_handler.py")

and its settings at a YAML file:

    export APPROUTE_KAMAILIO_CONFIG=/etc/kamailio/approute-kamailio.yaml

Kamailio embeds the system python3.  When approute is installed in a
virtualenv instead of the system site-packages, list the virtualenv's
site-packages directories in APPROUTE_SITE_DIRS (os.pathsep separated);
they are added with site.addsitedir() so that .pth files (editable
installs) work too.

The same file serves python_exec() configs and KEMI (cfgengine "python").
It runs once, in Kamailio's main process, before the workers fork.
"""

import os
import site

for _d in os.environ.get("APPROUTE_SITE_DIRS", "").split(os.pathsep):
    if _d:
        site.addsitedir(_d)

from approute.kamailio import mod_init  # noqa: E402,F401  (app_python3 calls it)
