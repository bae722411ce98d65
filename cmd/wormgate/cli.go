package main

import (
	"context"
	"errors"
)

// TODO(issue 11): the control client. Placeholders so the table compiles.
var errTODO = errors.New("not implemented yet")

func cmdStatus(context.Context, []string, streams) error   { return errTODO }
func cmdBans(context.Context, []string, streams) error     { return errTODO }
func cmdBan(context.Context, []string, streams) error      { return errTODO }
func cmdUnban(context.Context, []string, streams) error    { return errTODO }
func cmdAllow(context.Context, []string, streams) error    { return errTODO }
func cmdDisallow(context.Context, []string, streams) error { return errTODO }
func cmdWhy(context.Context, []string, streams) error      { return errTODO }
func cmdReload(context.Context, []string, streams) error   { return errTODO }
